// The spec's verification sample, verbatim, run against what the gateway sent.
// Usage: node verify_signature.js <body file> <signature> <secret>
// Exits 0 when the signature verifies both on the raw body string and on the body as
// Express's json() middleware would hand it over (re-serialised with JSON.stringify).
const crypto = require('crypto');
const fs = require('fs');

function verifyWebhookSignature(body, signature, secret) {
  const computedSignature = crypto
    .createHmac('sha256', secret)
    .update(typeof body === 'string' ? body : JSON.stringify(body))
    .digest('hex');

  return crypto.timingSafeEqual(
    Buffer.from(signature),
    Buffer.from(computedSignature)
  );
}

const [bodyFile, signature, secret] = process.argv.slice(2);
const raw = fs.readFileSync(bodyFile, 'utf8');
let ok = false;
try {
  ok = verifyWebhookSignature(raw, signature, secret) && verifyWebhookSignature(JSON.parse(raw), signature, secret);
} catch (e) {
  console.error(e.message);
}
process.exit(ok ? 0 : 1);
