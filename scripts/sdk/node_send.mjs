// Sends events to The Eye through the real @segment/analytics-node SDK.
//
//     node node_send.mjs HOST KEY N SESSION
//
// Sends N messages in session SESSION (the anonymous id), taking turns
// track and page, through the SDK's batching; flushes, and exits 1 if the
// SDK reported an error. cli/tests/sdks.rs runs it against a real eye serve.
import { Analytics } from '@segment/analytics-node';

const [host, writeKey, n, session] = process.argv.slice(2);
const analytics = new Analytics({ writeKey, host, flushAt: 20, maxRetries: 3 });
const errors = [];
analytics.on('error', (e) => errors.push(String(e?.reason ?? e?.message ?? JSON.stringify(e))));

for (let i = 0; i < Number(n); i++) {
  const userId = `user-${i % 3}`;
  if (i % 2 === 0) {
    analytics.track({
      userId,
      anonymousId: session,
      event: 'Item Viewed',
      properties: { sku: `sku-${i}`, index: i, sdk: 'node' },
    });
  } else {
    analytics.page({
      userId,
      anonymousId: session,
      category: 'Docs',
      name: 'Getting Started',
      properties: { path: `/docs/${i}`, index: i, sdk: 'node' },
    });
  }
}
await analytics.closeAndFlush({ timeout: 20000 });
if (errors.length > 0) {
  console.error(errors.join('\n'));
  process.exit(1);
}
console.log(`sent ${n} through analytics-node`);
