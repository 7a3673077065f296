#!/usr/bin/env node
// Sends one contract request and prints the reply: node tools/nats-req.mjs <subject> ['<json>']
// Uses ORANGERY_NATS_URL (default nats://127.0.0.1:4222). Exit 0 on {ok:true}, 1 on an error reply.
import { connect } from '@nats-io/transport-node';

const [subject, body = '{}'] = process.argv.slice(2);
if (!subject) {
  console.error("usage: node tools/nats-req.mjs <subject> ['<json body>']");
  process.exit(2);
}
const nc = await connect({ servers: (process.env.ORANGERY_NATS_URL ?? 'nats://127.0.0.1:4222').split(',') });
try {
  const msg = await nc.request(subject, body, { timeout: 10_000 });
  const reply = JSON.parse(msg.string());
  console.log(JSON.stringify(reply, null, 2));
  process.exitCode = reply.ok ? 0 : 1;
} catch (e) {
  console.error(`no reply from ${subject}: ${e.message}`);
  process.exitCode = 3;
} finally {
  await nc.close();
}
