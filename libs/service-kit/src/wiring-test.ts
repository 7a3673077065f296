import type { DynamicModule, INestApplicationContext, Provider, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

/** Lifecycle hooks Nest calls; a wiring test proves the graph resolves, so it runs none of them. */
const HOOKS = ['onModuleInit', 'onApplicationBootstrap', 'onModuleDestroy', 'beforeApplicationShutdown', 'onApplicationShutdown'] as const;

const tokenOf = (p: Provider): unknown => (typeof p === 'function' ? p : p.provide);

/**
 * A service module with its adapters replaced by fakes, resolved but not started: every
 * provider is built (factories run, classes are constructed with what they inject), no
 * lifecycle hook runs, so nothing connects, subscribes or starts a timer. `fakes` replace the
 * module's providers of the same token; a token the module does not have is an error (the
 * test would prove nothing). This is Test.createTestingModule(...).overrideProvider(...)
 * .compile() without @nestjs/testing, which is not a dependency yet.
 */
export async function compileWithFakes(module: DynamicModule, fakes: Provider[]): Promise<INestApplicationContext> {
  const providers = module.providers ?? [];
  const tokens = new Set(providers.map(tokenOf));
  for (const f of fakes) if (!tokens.has(tokenOf(f))) throw new Error(`the module has no provider ${String(tokenOf(f))} to replace`);
  const replaced = new Map(fakes.map((f) => [tokenOf(f), f]));
  const quiet = providers.map((p) => replaced.get(tokenOf(p)) ?? withoutHooks(p));
  return NestFactory.createApplicationContext({ ...module, providers: quiet }, { logger: false, abortOnError: false });
}

function withoutHooks(p: Provider): Provider {
  const cls = typeof p === 'function' ? p : 'useClass' in p ? p.useClass : undefined;
  if (!cls) return p;
  // A subclass keeps the constructor's @Inject metadata (read through the prototype chain).
  const Quiet = class extends (cls as Type<object>) {};
  for (const hook of HOOKS) Object.defineProperty(Quiet.prototype, hook, { value: undefined });
  Object.defineProperty(Quiet, 'name', { value: cls.name });
  return { provide: typeof p === 'function' ? p : p.provide, useClass: Quiet };
}
