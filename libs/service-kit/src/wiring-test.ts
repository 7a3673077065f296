import type { DynamicModule, INestApplicationContext, Provider, Type } from '@nestjs/common';

/** Lifecycle hooks Nest calls; a wiring test proves the graph resolves, so it runs none of them. */
const HOOKS = ['onModuleInit', 'onApplicationBootstrap', 'onModuleDestroy', 'beforeApplicationShutdown', 'onApplicationShutdown'] as const;

const tokenOf = (p: Provider): unknown => (typeof p === 'function' ? p : p.provide);

/**
 * A service module with its adapters replaced by fakes, resolved but not started, through
 * Nest's own `Test.createTestingModule(...).overrideProvider(...).compile()`: every provider
 * is built (factories run, classes are constructed with what they inject) and no lifecycle
 * hook runs, so nothing connects, subscribes or starts a timer, also not on `close()`.
 * `fakes` replace the module's providers of the same token; a token the module does not
 * have is an error (the test would prove nothing). @nestjs/testing is a dev dependency:
 * imported here only when called, so no service bundle loads it.
 */
export async function compileWithFakes(module: DynamicModule, fakes: Provider[]): Promise<INestApplicationContext> {
  const { Test } = await import('@nestjs/testing');
  const providers = module.providers ?? [];
  const tokens = new Set(providers.map(tokenOf));
  for (const f of fakes) if (!tokens.has(tokenOf(f))) throw new Error(`the module has no provider ${String(tokenOf(f))} to replace`);
  let builder = Test.createTestingModule({ imports: [{ ...module, providers: providers.map(withoutHooks) }] });
  for (const f of fakes) {
    const override = builder.overrideProvider(tokenOf(f));
    if (typeof f === 'function') builder = override.useClass(f);
    else if ('useValue' in f) builder = override.useValue(f.useValue);
    else if ('useFactory' in f) builder = override.useFactory({ factory: f.useFactory, ...(f.inject ? { inject: f.inject } : {}) });
    else if ('useClass' in f) builder = override.useClass(f.useClass);
    else throw new Error(`a fake for ${String(f.provide)} must be a value, a factory or a class`);
  }
  return builder.compile();
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
