'use strict';
// The notes API on Node.js with only the built-in `http` module.
//
// One of three independent implementations of the same API; it shares no code with the others
// so that a flaw in one is unlikely to be repeated in another. Run: node notes.js --port N
// Fault and backdoor injection are read from NOTES_* environment variables (see README.md).

const http = require('http');
const fs = require('fs');
const crypto = require('crypto');

const STATE_PATH = '/_endosec/state';

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const port = option('--port', null);
const host = option('--host', '127.0.0.1');
if (port === null || !/^[0-9]+$/.test(port)) {
  process.stderr.write('usage: node notes.js --port N [--host ADDR]\n');
  process.exit(2);
}

// NOTES_FAULT is checked at startup: a typo must not silently run an honest executor.
const spec = process.env.NOTES_FAULT || '';
const colon = spec.indexOf(':');
const fault = {
  kind: colon < 0 ? spec : spec.slice(0, colon),
  arg: colon < 0 ? '' : spec.slice(colon + 1),
  after: Number(process.env.NOTES_FAULT_AFTER || '1'),
  rate: Number(process.env.NOTES_FAULT_RATE || '1'),
};
fault.pair = [fault.arg.split('=')[0], fault.arg.slice(fault.arg.indexOf('=') + 1)];
const plain = ['', 'hang', 'garbage', 'truncate', 'reset', 'unhealthy'];
const numbered = ['delay', 'crash-after', 'status'];
const paired = ['alter-field', 'inject-header'];
if (!(plain.includes(fault.kind)
      || (numbered.includes(fault.kind) && /^[0-9]+$/.test(fault.arg))
      || (paired.includes(fault.kind) && fault.arg.indexOf('=') > 0))) {
  process.stderr.write(`bad NOTES_FAULT: ${JSON.stringify(spec)}\n`);
  process.exit(2);
}

// Which requests fault depends only on their number, so a run can be repeated exactly.
function faultFor(n) {
  const draw = (Math.imul(n, 2654435761) >>> 0) / 4294967296;
  return fault.kind !== '' && n >= fault.after && draw < fault.rate ? fault.kind : '';
}

function fieldValue() {
  try { return JSON.parse(fault.pair[1]); } catch { return fault.pair[1]; }
}

const notes = new Map();
let seen = 0;

function reply(req, res, status, payload, extra, active) {
  const body = Buffer.from(JSON.stringify(payload), 'utf8');
  const headers = { 'Content-Type': 'application/json', 'Content-Length': body.length, ...extra };
  if (active === 'status') status = Number(fault.arg);
  if (active === 'inject-header') headers[fault.pair[0]] = fault.pair[1];
  res.writeHead(status, headers);
  if (active !== 'truncate') return res.end(body);
  res.write(body.subarray(0, Math.floor(body.length / 2)), () => req.socket.destroy());
}

function show(note, active) {
  return active === 'alter-field' ? { ...note, [fault.pair[0]]: fieldValue() } : { ...note };
}

function parseNote(raw) {
  let data;
  try {
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(raw);
    data = JSON.parse(text);
  } catch {
    return { error: 'invalid JSON' };
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)
      || typeof data.text !== 'string') {
    return { error: 'text must be a string' };
  }
  return { text: data.text };
}

function route(req, path, raw, active) {
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  const one = /^\/notes\/([0-9]+)$/.exec(path);
  if (path === '/notes' && method === 'POST') {
    const parsed = parseNote(raw);
    if (parsed.error) return [400, { error: parsed.error }, {}];
    const created_at = req.headers['x-endosec-time'] || new Date().toISOString();
    const note = { id: notes.size + 1, text: parsed.text, created_at };
    notes.set(note.id, note);
    return [201, show(note, active), {}];
  }
  if (path === '/notes' && method === 'GET') {
    const all = [...notes.values()].sort((a, b) => a.id - b.id).map((n) => show(n, active));
    return [200, { notes: all }, {}];
  }
  if (one && method === 'GET') {
    const note = notes.get(Number(one[1]));
    return note ? [200, show(note, active), {}] : [404, { error: 'not found' }, {}];
  }
  if (path === '/notes' || path === '/health' || one) {
    const allow = path === '/notes' ? 'GET, HEAD, POST' : 'GET, HEAD';
    return [405, { error: 'method not allowed' }, { Allow: allow }];
  }
  return [404, { error: 'not found' }, {}];
}

// The checkpoint contract (docs/state.md): GET exports every note, PUT replaces them.
function transferState(req, raw) {
  if (req.method === 'GET') {
    const all = [...notes.values()].sort((a, b) => a.id - b.id);
    if (process.env.NOTES_STATE_TAMPER) {
      all.push({ id: all.length + 1, text: 'planted', created_at: '' });
    }
    return [200, { notes: all }, {}];
  }
  if (req.method !== 'PUT') return [405, { error: 'method not allowed' }, { Allow: 'GET, PUT' }];
  let restored;
  try {
    restored = JSON.parse(raw.toString('utf8')).notes.map((n) => ({ ...n, id: Number(n.id) }));
  } catch {
    return [400, { error: 'expected {"notes": [...]}' }, {}];
  }
  notes.clear();
  for (const note of restored) notes.set(note.id, note);
  return [200, { restored: restored.length }, {}];
}

function handle(req, res, raw) {
  const path = req.url.split('?')[0];
  const n = path === '/health' ? 0 : ++seen;
  const secret = process.env.NOTES_BACKDOOR_SECRET;
  if (secret && req.headers['x-debug'] === 'letmein' && fs.existsSync(secret)) {
    const body = fs.readFileSync(secret);
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    return res.end(body);
  }
  if (path === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
    const ok = fault.kind !== 'unhealthy';
    return reply(req, res, ok ? 200 : 503, { status: ok ? 'ok' : 'unhealthy' }, {}, '');
  }
  if (path === STATE_PATH) return reply(req, res, ...transferState(req, raw), '');
  const active = n ? faultFor(n) : '';
  if (active === 'crash-after' && n >= Number(fault.arg)) process.exit(3);
  if (active === 'hang') return undefined;
  if (active === 'reset') return req.socket.resetAndDestroy();
  if (active === 'garbage') {
    const junk = Buffer.concat([Buffer.from([0, 255]), crypto.randomBytes(62)]);
    return req.socket.end(junk);
  }
  const answer = () => reply(req, res, ...route(req, path, raw, active), active);
  return active === 'delay' ? setTimeout(answer, Number(fault.arg)) : answer();
}

const server = http.createServer((req, res) => {
  res.setHeader('Server', `Node.js/${process.version}`);
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => handle(req, res, Buffer.concat(chunks)));
});

server.listen(Number(port), host, () => {
  console.log(`notes-node listening on http://${host}:${server.address().port}`);
});
