// Drives every Secrets Store method of Cloudflare's TypeScript SDK against a Coffer server.
//
// Environment: CLOUDFLARE_BASE_URL (http://ADDR/client/v4), CLOUDFLARE_API_TOKEN,
// CLOUDFLARE_ACCOUNT_ID, and CF_TS_SDK: the package to load, "cloudflare" (5.2.0, the version
// wrangler 4.85.0 bundles) or "cloudflare-v7" (7.3.0); the two differ in method signatures.
// Run on a fresh server: the checks assume the account starts empty.
//
// Each step prints "ok: ..." as it passes; a failure prints "FAIL: ..." and exits 1. The last
// line of standard output is a JSON summary the Rust test checks against the server.

const PKG = process.env.CF_TS_SDK || 'cloudflare';
const EXPECTED_VERSION = { cloudflare: '5.2.0', 'cloudflare-v7': '7.3.0' }[PKG];
const BASE_URL = process.env.CLOUDFLARE_BASE_URL;
const TOKEN = process.env.CLOUDFLARE_API_TOKEN;
const ACCOUNT = process.env.CLOUDFLARE_ACCOUNT_ID;

// Error codes Coffer documents (crates/coffer-api/src/error_code.rs).
const INVALID_SCOPE = 1006;
const INVALID_BATCH = 1010;
const UNAUTHENTICATED = 1100;
const STORE_NOT_FOUND = 1201;
const SECRET_NOT_FOUND = 1202;
const STORE_NAME_TAKEN = 1300;
const SECRET_NAME_TAKEN = 1301;
const STORE_NOT_EMPTY = 1302;

const SENTINEL = 'ts-sentinel-value-41c9';

function ok(msg) {
  console.log(`ok: ${msg}`);
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

const show = (v) => JSON.stringify(v);
const sorted = (xs) => [...xs].sort();
const same = (a, b) => show(a) === show(b);

// Counts HTTP requests, so a test can tell whether the SDK retried one.
let requests = 0;
const countingFetch = (url, init) => {
  requests += 1;
  return fetch(url, init);
};

const Cloudflare = (await import(PKG)).default;
const version = (await import(`${PKG}/version`)).VERSION;
check(version === EXPECTED_VERSION, `expected ${PKG} ${EXPECTED_VERSION}, found ${version}`);
const V7 = Number(version.split('.')[0]) >= 6;

const client = new Cloudflare({ apiToken: TOKEN, baseURL: BASE_URL, fetch: countingFetch });
const ss = client.secretsStore;

// One calling convention over both SDK generations: 5.x takes (storeId, secretId, params), 7.x
// takes (secretId, { store_id, ...params }).
const api = {
  async createStore(name) {
    if (!V7) {
      // 5.x sends [{ name }] and reads the reply as a page of stores; iterate it as its
      // documentation does.
      const out = [];
      for await (const s of ss.stores.create({ account_id: ACCOUNT, body: [{ name }] })) out.push(s);
      check(out.length === 1, `stores.create returned ${out.length} stores: ${show(out)}`);
      return out[0];
    }
    return ss.stores.create({ account_id: ACCOUNT, name });
  },
  getStore: (id) => ss.stores.get(id, { account_id: ACCOUNT }),
  listStores: (q = {}) => ss.stores.list({ account_id: ACCOUNT, ...q }),
  deleteStore(id, force) {
    if (V7) return ss.stores.delete(id, { account_id: ACCOUNT, ...(force ? { force: true } : {}) });
    // 5.x has no force parameter; pass it through the request options.
    return ss.stores.delete(id, { account_id: ACCOUNT }, force ? { query: { force: true } } : undefined);
  },
  createSecrets: (store, body) => ss.stores.secrets.create(store, { account_id: ACCOUNT, body }),
  listSecrets: (store, q = {}) => ss.stores.secrets.list(store, { account_id: ACCOUNT, ...q }),
  getSecret: (store, id) =>
    V7
      ? ss.stores.secrets.get(id, { account_id: ACCOUNT, store_id: store })
      : ss.stores.secrets.get(store, id, { account_id: ACCOUNT }),
  editSecret: (store, id, fields) =>
    V7
      ? ss.stores.secrets.edit(id, { account_id: ACCOUNT, store_id: store, ...fields })
      : ss.stores.secrets.edit(store, id, { account_id: ACCOUNT, ...fields }),
  duplicateSecret: (store, id, fields) =>
    V7
      ? ss.stores.secrets.duplicate(id, { account_id: ACCOUNT, store_id: store, ...fields })
      : ss.stores.secrets.duplicate(store, id, { account_id: ACCOUNT, ...fields }),
  deleteSecret: (store, id) =>
    V7
      ? ss.stores.secrets.delete(id, { account_id: ACCOUNT, store_id: store })
      : ss.stores.secrets.delete(store, id, { account_id: ACCOUNT }),
  // Neither SDK has an ids parameter: the ids go in the request options' body.
  bulkDelete: (store, ids) =>
    ss.stores.secrets.bulkDelete(store, { account_id: ACCOUNT }, ids === undefined ? undefined : { body: ids }),
  quota: () => ss.quota.get({ account_id: ACCOUNT }),
};

async function collect(pager) {
  const out = [];
  for await (const item of pager) out.push(item);
  return out;
}

// Item counts of the pages an iterator fetched; the SDK stops after an empty page, dropped here.
async function pageSizes(pager) {
  const sizes = [];
  for await (const page of (await pager).iterPages()) sizes.push(page.getPaginatedItems().length);
  check(sizes.length > 0 && sizes[sizes.length - 1] === 0, `the SDK should end on an empty page: ${show(sizes)}`);
  return sizes.slice(0, -1);
}

function noValue(obj, what) {
  const text = show(obj);
  check(!text.includes(SENTINEL) && !text.includes('"value"'), `${what} leaked a value: ${text}`);
}

async function expectError(fn, Cls, code, what) {
  const before = requests;
  let err;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  check(err !== undefined, `${what}: expected ${Cls.name}, but the call succeeded`);
  check(err instanceof Cls, `${what}: expected ${Cls.name}, got ${err?.constructor?.name} ${err?.message}`);
  const codes = (err.errors ?? []).map((e) => e.code);
  check(codes.includes(code), `${what}: expected code ${code}, got ${show(err.errors)} (${err.message})`);
  const sent = requests - before;
  check(
    sent === 1,
    `${what}: the SDK sent ${sent} requests (it retries 409/5xx unless the response has x-should-retry: false); ` +
      `response headers ${show(Object.fromEntries(err.headers?.entries?.() ?? Object.entries(err.headers ?? {})))}`,
  );
  ok(`${what} -> ${Cls.name} ${err.status} code ${code}`);
  return err;
}

async function main() {
  check(BASE_URL && TOKEN && ACCOUNT, 'CLOUDFLARE_BASE_URL, CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID must be set');
  console.log(`using ${PKG} ${version}`);

  // ---- quota ----
  const quota0 = await api.quota();
  check(quota0?.secrets?.usage === 0, `fresh account should use no secrets: ${show(quota0)}`);
  check(quota0.secrets.quota >= 20, `quota too small for this test: ${show(quota0)}`);
  ok(`quota.get -> ${show(quota0)}`);

  // ---- stores ----
  const storeNames = ['ts-main', 'ts-second', 'ts-third'];
  const stores = {};
  for (const name of storeNames) {
    const s = await api.createStore(name);
    check(s?.name === name && /^[0-9a-f]{32}$/.test(s.id), `stores.create: ${show(s)}`);
    stores[name] = s;
  }
  ok(`stores.create x${storeNames.length}`);
  const main = stores['ts-main'];

  if (V7) {
    const got = await api.getStore(main.id);
    check(got.id === main.id && got.name === 'ts-main' && got.created && got.modified, `stores.get: ${show(got)}`);
    ok('stores.get');
    await expectError(() => api.getStore('0'.repeat(32)), Cloudflare.NotFoundError, STORE_NOT_FOUND, 'stores.get unknown id');
  }

  const listedStores = (await collect(api.listStores({ per_page: 1 }))).map((s) => s.name);
  check(same(sorted(listedStores), sorted(storeNames)), `stores.list auto-paging: ${show(listedStores)}`);
  const storePages = await pageSizes(api.listStores({ per_page: 2 }));
  check(same(storePages, [2, 1]), `stores.list pages: ${show(storePages)}`);
  const byName = (await collect(api.listStores({ order: 'name', direction: 'desc' }))).map((s) => s.name);
  check(same(byName, sorted(storeNames).reverse()), `stores.list order=name desc: ${show(byName)}`);
  ok('stores.list (per_page=1 auto-paging over 3 pages, order/direction)');

  await expectError(() => api.createStore('ts-main'), Cloudflare.ConflictError, STORE_NAME_TAKEN, 'duplicate store name');

  // ---- secrets.create: several in one request ----
  const specs = [
    ...[0, 1, 2, 3, 4].map((i) => ({ name: `TS_ALPHA_${i}`, value: `${SENTINEL}-${i}`, scopes: ['workers'] })),
    { name: 'TS_BETA', value: SENTINEL, scopes: ['workers', 'ai_gateway'], comment: 'beta comment' },
    { name: 'TS_GAMMA', value: SENTINEL, scopes: ['ai_gateway'], comment: 'needle here' },
  ];
  const created = await collect(api.createSecrets(main.id, specs));
  check(same(created.map((s) => s.name), specs.map((s) => s.name)), `secrets.create names: ${show(created)}`);
  for (const s of created) {
    noValue(s, 'secrets.create');
    check(s.store_id === main.id && /^[0-9a-f]{32}$/.test(s.id), `secrets.create item: ${show(s)}`);
    check(['pending', 'active'].includes(s.status), `secrets.create status: ${show(s)}`);
    check(Array.isArray(s.scopes), `secrets.create scopes: ${show(s)}`);
  }
  const ids = Object.fromEntries(created.map((s) => [s.name, s.id]));
  const beta = created.find((s) => s.name === 'TS_BETA');
  check(beta.comment === 'beta comment' && same(sorted(beta.scopes), ['ai_gateway', 'workers']), `secrets.create fields: ${show(beta)}`);
  ok(`secrets.create with ${specs.length} items in one request`);

  // ---- secrets.list ----
  const allNames = sorted(specs.map((s) => s.name));
  const listed = (await collect(api.listSecrets(main.id, { per_page: 3 }))).map((s) => s.name);
  check(same(sorted(listed), allNames), `secrets.list auto-paging: ${show(listed)}`);
  const sizes = await pageSizes(api.listSecrets(main.id, { per_page: 3 }));
  check(same(sizes, [3, 3, 1]), `secrets.list pages: ${show(sizes)}`);
  const firstPage = await api.listSecrets(main.id, { per_page: 3 });
  for (const s of firstPage.getPaginatedItems()) noValue(s, 'secrets.list');
  if (firstPage.result_info?.total_count !== undefined) {
    check(firstPage.result_info.total_count === specs.length, `result_info: ${show(firstPage.result_info)}`);
  }
  ok('secrets.list auto-paging (per_page=3 -> pages of 3, 3, 1)');

  const page2 = await api.listSecrets(main.id, { per_page: 2, page: 2 });
  check(page2.getPaginatedItems().length === 2, `secrets.list page=2: ${show(page2.getPaginatedItems())}`);
  const pastEnd = await api.listSecrets(main.id, { per_page: 5, page: 9 });
  check(pastEnd.getPaginatedItems().length === 0 && !pastEnd.hasNextPage(), 'page past the end should be empty');
  ok('secrets.list explicit page, page past the end is empty');

  let found = (await collect(api.listSecrets(main.id, { search: 'needle' }))).map((s) => s.name);
  check(same(found, ['TS_GAMMA']), `search over comment: ${show(found)}`);
  found = sorted((await collect(api.listSecrets(main.id, { search: 'TS_ALPHA' }))).map((s) => s.name));
  check(same(found, [0, 1, 2, 3, 4].map((i) => `TS_ALPHA_${i}`)), `search over name: ${show(found)}`);
  found = sorted((await collect(api.listSecrets(main.id, { scopes: ['ai_gateway'] }))).map((s) => s.name));
  check(same(found, ['TS_BETA', 'TS_GAMMA']), `scopes=[ai_gateway]: ${show(found)}`);
  found = sorted((await collect(api.listSecrets(main.id, { scopes: ['workers', 'ai_gateway'] }))).map((s) => s.name));
  check(same(found, ['TS_BETA']), `scopes=[workers, ai_gateway]: ${show(found)}`);
  found = (await collect(api.listSecrets(main.id, { order: 'name', direction: 'desc' }))).map((s) => s.name);
  check(same(found, [...allNames].reverse()), `order=name desc: ${show(found)}`);
  ok('secrets.list search (name and comment), scopes filter, order/direction');

  // ---- get, edit ----
  const got = await api.getSecret(main.id, ids.TS_BETA);
  check(got.id === ids.TS_BETA && got.name === 'TS_BETA' && got.comment === 'beta comment', `secrets.get: ${show(got)}`);
  noValue(got, 'secrets.get');
  ok('secrets.get');

  let edited = await api.editSecret(main.id, ids.TS_BETA, { value: `${SENTINEL}-new`, comment: 'edited comment' });
  check(edited.comment === 'edited comment' && same(sorted(edited.scopes), ['ai_gateway', 'workers']), `secrets.edit: ${show(edited)}`);
  check(new Date(edited.modified) >= new Date(got.modified), `modified went back: ${got.modified} -> ${edited.modified}`);
  noValue(edited, 'secrets.edit');
  edited = await api.editSecret(main.id, ids.TS_BETA, { scopes: ['workers'] });
  check(same(edited.scopes, ['workers']) && edited.comment === 'edited comment', `secrets.edit scopes: ${show(edited)}`);
  ok('secrets.edit (value+comment, then scopes only)');
  await expectError(
    () => api.editSecret(main.id, ids.TS_BETA, { scopes: ['not_a_scope'] }),
    Cloudflare.BadRequestError,
    INVALID_SCOPE,
    'secrets.edit unknown scope',
  );

  // ---- duplicate ----
  const dup = await api.duplicateSecret(main.id, ids.TS_BETA, { name: 'TS_BETA_COPY', scopes: ['workers', 'ai_gateway'], comment: 'a copy' });
  check(dup.name === 'TS_BETA_COPY' && dup.id !== ids.TS_BETA && dup.store_id === main.id, `secrets.duplicate: ${show(dup)}`);
  check(same(sorted(dup.scopes), ['ai_gateway', 'workers']) && dup.comment === 'a copy', `duplicate fields: ${show(dup)}`);
  noValue(dup, 'secrets.duplicate');
  ids.TS_BETA_COPY = dup.id;
  ok('secrets.duplicate');

  // ---- errors ----
  await expectError(
    () => collect(api.createSecrets(main.id, [{ name: 'TS_GAMMA', value: SENTINEL, scopes: ['workers'] }])),
    Cloudflare.ConflictError,
    SECRET_NAME_TAKEN,
    'duplicate secret name on create',
  );
  await expectError(
    () => api.duplicateSecret(main.id, ids.TS_BETA, { name: 'TS_GAMMA', scopes: ['workers'] }),
    Cloudflare.ConflictError,
    SECRET_NAME_TAKEN,
    'duplicate secret name on duplicate',
  );
  await expectError(() => api.getSecret(main.id, 'f'.repeat(32)), Cloudflare.NotFoundError, SECRET_NOT_FOUND, 'secrets.get unknown id');
  await expectError(
    () => collect(api.createSecrets(main.id, [{ name: 'TS_BAD', value: SENTINEL, scopes: ['nope'] }])),
    Cloudflare.BadRequestError,
    INVALID_SCOPE,
    'secrets.create unknown scope',
  );
  const badAuth = new Cloudflare({ apiToken: 'not-a-valid-token', baseURL: BASE_URL, fetch: countingFetch });
  await expectError(
    () => collect(badAuth.secretsStore.stores.list({ account_id: ACCOUNT })),
    Cloudflare.AuthenticationError,
    UNAUTHENTICATED,
    'wrong API token',
  );

  // ---- bulk delete ----
  // Without ids the SDK sends an empty body; it must be refused, not taken as "delete all".
  let bulkErr;
  try {
    await api.bulkDelete(main.id);
  } catch (e) {
    bulkErr = e;
  }
  check(bulkErr instanceof Cloudflare.BadRequestError, `bulkDelete without ids: expected BadRequestError, got ${bulkErr?.constructor?.name} ${bulkErr?.message}`);
  const bulkCodes = (bulkErr.errors ?? []).map((e) => e.code);
  ok(`bulkDelete without a body -> 400 codes ${show(bulkCodes)}`);
  if (!bulkCodes.includes(INVALID_BATCH)) console.log(`note: bulkDelete without a body answered codes ${show(bulkCodes)}, not ${INVALID_BATCH} invalid_batch`);
  let remaining = (await collect(api.listSecrets(main.id))).map((s) => s.name);
  check(remaining.length === specs.length + 1, `a refused bulk delete deleted something: ${show(remaining)}`);

  await api.bulkDelete(main.id, [ids.TS_ALPHA_3, ids.TS_ALPHA_4]);
  remaining = (await collect(api.listSecrets(main.id))).map((s) => s.name);
  check(!remaining.includes('TS_ALPHA_3') && !remaining.includes('TS_ALPHA_4') && remaining.includes('TS_ALPHA_2'), `after bulkDelete: ${show(remaining)}`);
  ok('bulkDelete with ids passed as the request body');

  // ---- single delete ----
  const del = await api.deleteSecret(main.id, ids.TS_ALPHA_2);
  check(del === null || del === undefined, `secrets.delete result: ${show(del)}`);
  await expectError(() => api.getSecret(main.id, ids.TS_ALPHA_2), Cloudflare.NotFoundError, SECRET_NOT_FOUND, 'get after delete');
  ok('secrets.delete');

  // ---- store delete ----
  const third = stores['ts-third'];
  await collect(api.createSecrets(third.id, [{ name: 'TS_DOOMED', value: SENTINEL, scopes: ['workers'] }]));
  await expectError(() => api.deleteStore(third.id, false), Cloudflare.ConflictError, STORE_NOT_EMPTY, 'delete non-empty store without force');
  await api.deleteStore(third.id, true);
  const second = stores['ts-second'];
  await api.deleteStore(second.id, false);
  const left = (await collect(api.listStores())).map((s) => s.id);
  check(same(left, [main.id]), `stores left after deletes: ${show(left)}`);
  if (V7) await expectError(() => api.getStore(third.id), Cloudflare.NotFoundError, STORE_NOT_FOUND, 'get deleted store');
  ok('stores.delete (non-empty refused, force, empty store)');

  const kept = sorted([...specs.map((s) => s.name).filter((n) => !['TS_ALPHA_2', 'TS_ALPHA_3', 'TS_ALPHA_4'].includes(n)), 'TS_BETA_COPY']);
  const quota1 = await api.quota();
  check(quota1.secrets.usage === kept.length, `quota usage ${quota1.secrets.usage}, expected ${kept.length}`);
  ok(`quota usage is ${kept.length}`);

  console.log(JSON.stringify({ kept_store_id: main.id, kept_secret_names: kept, deleted_store_ids: [second.id, third.id] }));
}

try {
  await main();
} catch (e) {
  console.error(`FAIL: ${e?.stack ?? e}`);
  process.exit(1);
}
