#!/usr/bin/env python3
"""Drives every Secrets Store method of Cloudflare's Python SDK against a Coffer server.

Environment: CLOUDFLARE_BASE_URL (http://ADDR/client/v4), CLOUDFLARE_API_TOKEN,
CLOUDFLARE_ACCOUNT_ID. Run on a fresh server: the checks assume the account starts empty.

Each step prints "ok: ..." as it passes; any mismatch raises and the exit code is non-zero. The
last line of standard output is a JSON summary the Rust test checks against the server:
{"kept_store_id": ..., "kept_secret_names": [...], "deleted_store_ids": [...]}.
"""

import asyncio
import json
import os
import sys

import cloudflare
from cloudflare import AsyncCloudflare, Cloudflare

EXPECTED_SDK_VERSION = "5.9.0"

BASE_URL = os.environ["CLOUDFLARE_BASE_URL"]
TOKEN = os.environ["CLOUDFLARE_API_TOKEN"]
ACCOUNT = os.environ["CLOUDFLARE_ACCOUNT_ID"]

# Error codes Coffer documents (crates/coffer-api/src/error_code.rs).
INVALID_SCOPE = 1006
INVALID_BATCH = 1010
UNAUTHENTICATED = 1100
STORE_NOT_FOUND = 1201
SECRET_NOT_FOUND = 1202
STORE_NAME_TAKEN = 1300
SECRET_NAME_TAKEN = 1301
STORE_NOT_EMPTY = 1302

# A value that must never come back in any response.
SENTINEL = "py-sentinel-value-7f3a"


def ok(msg):
    print(f"ok: {msg}", flush=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def error_codes(err):
    body = err.body if isinstance(err.body, dict) else {}
    return [e.get("code") for e in body.get("errors") or []]


def expect_error(fn, exc_type, code, what):
    """Calls fn, which must raise exc_type carrying `code` in errors[], without SDK retries."""
    try:
        fn()
    except exc_type as err:
        check(code in error_codes(err), f"{what}: expected code {code}, got body {err.body!r}")
        # The SDK retries 408/409/429/5xx unless told not to (x-should-retry: false). A retried
        # request carries x-stainless-retry-count > 0; deterministic errors must not be retried.
        retries = err.response.request.headers.get("x-stainless-retry-count", "0")
        check(retries == "0", f"{what}: the SDK retried the request {retries} time(s); "
                              f"the server should send x-should-retry: false "
                              f"(status {err.status_code}, headers {dict(err.response.headers)})")
        ok(f"{what} -> {exc_type.__name__} {err.status_code} code {code}")
        return err
    except cloudflare.APIStatusError as err:
        raise AssertionError(f"{what}: expected {exc_type.__name__}, got {type(err).__name__} "
                             f"{err.status_code} {err.body!r}") from err
    raise AssertionError(f"{what}: expected {exc_type.__name__}, but the call succeeded")


def page_sizes(pager):
    """Item counts of the pages an SDK iterator fetched. The SDK stops only after an empty page,
    so the last fetched page is empty; it is dropped here."""
    sizes = [len(p.result) for p in pager.iter_pages()]
    check(sizes and sizes[-1] == 0, f"the SDK should end on an empty page: {sizes}")
    return sizes[:-1]


def no_value(obj, what):
    dumped = json.dumps(obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj)
    check(SENTINEL not in dumped and '"value"' not in dumped, f"{what} leaked a value: {dumped}")


def main():
    check(cloudflare.__version__ == EXPECTED_SDK_VERSION,
          f"expected cloudflare {EXPECTED_SDK_VERSION}, found {cloudflare.__version__}")
    cf = Cloudflare(api_token=TOKEN, base_url=BASE_URL)
    ss = cf.secrets_store
    secrets = ss.stores.secrets

    # ---- quota ----
    quota0 = ss.quota.get(account_id=ACCOUNT)
    check(quota0 is not None and quota0.secrets is not None, f"quota: {quota0!r}")
    usage0 = int(quota0.secrets.usage)
    check(usage0 == 0, f"fresh account should use no secrets, usage={usage0}")
    check(quota0.secrets.quota >= 20, f"quota too small for this test: {quota0.secrets.quota}")
    ok(f"quota.get -> quota {quota0.secrets.quota}, usage {usage0}")

    # ---- stores: create, get, list over several pages ----
    store_names = ["py-main", "py-second", "py-third"]
    stores = {}
    for name in store_names:
        s = ss.stores.create(account_id=ACCOUNT, name=name)
        check(s is not None and s.name == name and len(s.id) == 32, f"stores.create: {s!r}")
        stores[name] = s
    ok(f"stores.create x{len(store_names)}")
    main_store = stores["py-main"]

    got = ss.stores.get(main_store.id, account_id=ACCOUNT)
    check(got.id == main_store.id and got.name == "py-main", f"stores.get: {got!r}")
    check(got.created is not None and got.modified is not None, f"stores.get timestamps: {got!r}")
    ok("stores.get")

    listed = [s.name for s in ss.stores.list(account_id=ACCOUNT, per_page=1)]
    check(sorted(listed) == sorted(store_names), f"stores.list auto-paging: {listed}")
    sizes = page_sizes(ss.stores.list(account_id=ACCOUNT, per_page=2))
    check(sizes == [2, 1], f"stores.list pages: {sizes}")
    by_name = [s.name for s in ss.stores.list(account_id=ACCOUNT, order="name", direction="desc")]
    check(by_name == sorted(store_names, reverse=True), f"stores.list order=name desc: {by_name}")
    ok("stores.list (per_page=1 auto-paging over 3 pages, order/direction)")

    expect_error(lambda: ss.stores.create(account_id=ACCOUNT, name="py-main"),
                 cloudflare.ConflictError, STORE_NAME_TAKEN, "duplicate store name")
    expect_error(lambda: ss.stores.get("0" * 32, account_id=ACCOUNT),
                 cloudflare.NotFoundError, STORE_NOT_FOUND, "stores.get unknown id")

    # ---- secrets: create several in one call ----
    specs = [
        {"name": f"PY_ALPHA_{i}", "value": f"{SENTINEL}-{i}", "scopes": ["workers"]} for i in range(5)
    ] + [
        {"name": "PY_BETA", "value": SENTINEL, "scopes": ["workers", "ai_gateway"], "comment": "beta comment"},
        {"name": "PY_GAMMA", "value": SENTINEL, "scopes": ["ai_gateway"], "comment": "needle here"},
    ]
    page = secrets.create(main_store.id, account_id=ACCOUNT, body=specs)
    created = list(page)
    check([s.name for s in created] == [s["name"] for s in specs], f"secrets.create names: {created!r}")
    for s in created:
        no_value(s, "secrets.create")
        check(s.store_id == main_store.id and len(s.id) == 32, f"secrets.create item: {s!r}")
        check(s.status in ("pending", "active"), f"secrets.create status: {s.status!r}")
    ids = {s.name: s.id for s in created}
    beta = next(s for s in created if s.name == "PY_BETA")
    check(beta.comment == "beta comment" and sorted(beta.scopes) == ["ai_gateway", "workers"],
          f"secrets.create fields: {beta!r}")
    ok(f"secrets.create with {len(specs)} items in one request")

    # ---- secrets.list: pagination over several pages, filters, order ----
    all_names = sorted(s["name"] for s in specs)
    listed = [s.name for s in secrets.list(main_store.id, account_id=ACCOUNT, per_page=3)]
    check(sorted(listed) == all_names and len(listed) == len(set(listed)), f"secrets.list paging: {listed}")
    sizes = page_sizes(secrets.list(main_store.id, account_id=ACCOUNT, per_page=3))
    check(sizes == [3, 3, 1], f"secrets.list pages: {sizes}")
    pages = list(secrets.list(main_store.id, account_id=ACCOUNT, per_page=3).iter_pages())
    first = pages[0]
    if first.result_info is not None and first.result_info.total_count is not None:
        check(first.result_info.total_count == len(specs), f"result_info: {first.result_info!r}")
    for p in pages:
        for s in p.result:
            no_value(s, "secrets.list")
    ok("secrets.list auto-paging (per_page=3 -> pages of 3, 3, 1)")

    one_page = secrets.list(main_store.id, account_id=ACCOUNT, per_page=2, page=2)
    check(len(one_page.result) == 2, f"secrets.list page=2: {one_page.result!r}")
    past_end = secrets.list(main_store.id, account_id=ACCOUNT, per_page=5, page=9)
    check(past_end.result == [] and not past_end.has_next_page(), f"page past the end: {past_end.result!r}")
    ok("secrets.list explicit page, page past the end is empty")

    found = [s.name for s in secrets.list(main_store.id, account_id=ACCOUNT, search="needle")]
    check(found == ["PY_GAMMA"], f"search over comment: {found}")
    found = sorted(s.name for s in secrets.list(main_store.id, account_id=ACCOUNT, search="PY_ALPHA"))
    check(found == [f"PY_ALPHA_{i}" for i in range(5)], f"search over name: {found}")
    found = sorted(s.name for s in secrets.list(main_store.id, account_id=ACCOUNT, scopes=["ai_gateway"]))
    check(found == ["PY_BETA", "PY_GAMMA"], f"scopes=[ai_gateway]: {found}")
    found = sorted(s.name for s in secrets.list(main_store.id, account_id=ACCOUNT,
                                                  scopes=["workers", "ai_gateway"]))
    check(found == ["PY_BETA"], f"scopes=[workers, ai_gateway]: {found}")
    found = [s.name for s in secrets.list(main_store.id, account_id=ACCOUNT, order="name", direction="desc")]
    check(found == sorted(all_names, reverse=True), f"order=name desc: {found}")
    ok("secrets.list search (name and comment), scopes filter, order/direction")

    # ---- get, edit ----
    got = secrets.get(ids["PY_BETA"], account_id=ACCOUNT, store_id=main_store.id)
    check(got.id == ids["PY_BETA"] and got.name == "PY_BETA" and got.comment == "beta comment",
          f"secrets.get: {got!r}")
    no_value(got, "secrets.get")
    ok("secrets.get")

    edited = secrets.edit(ids["PY_BETA"], account_id=ACCOUNT, store_id=main_store.id,
                          value=SENTINEL + "-new", comment="edited comment")
    check(edited.comment == "edited comment" and sorted(edited.scopes) == ["ai_gateway", "workers"],
          f"secrets.edit value+comment: {edited!r}")
    check(edited.modified >= got.modified, f"modified went back: {got.modified} -> {edited.modified}")
    no_value(edited, "secrets.edit")
    edited = secrets.edit(ids["PY_BETA"], account_id=ACCOUNT, store_id=main_store.id, scopes=["workers"])
    check(edited.scopes == ["workers"] and edited.comment == "edited comment", f"secrets.edit scopes: {edited!r}")
    ok("secrets.edit (value+comment, then scopes only)")

    expect_error(lambda: secrets.edit(ids["PY_BETA"], account_id=ACCOUNT, store_id=main_store.id,
                                      scopes=["not_a_scope"]),
                 cloudflare.BadRequestError, INVALID_SCOPE, "secrets.edit unknown scope")

    # ---- duplicate ----
    dup = secrets.duplicate(ids["PY_BETA"], account_id=ACCOUNT, store_id=main_store.id,
                            name="PY_BETA_COPY", scopes=["workers", "ai_gateway"], comment="a copy")
    check(dup.name == "PY_BETA_COPY" and dup.id != ids["PY_BETA"] and dup.store_id == main_store.id,
          f"secrets.duplicate: {dup!r}")
    check(sorted(dup.scopes) == ["ai_gateway", "workers"] and dup.comment == "a copy", f"duplicate fields: {dup!r}")
    no_value(dup, "secrets.duplicate")
    ids["PY_BETA_COPY"] = dup.id
    ok("secrets.duplicate")

    # ---- errors ----
    expect_error(lambda: secrets.create(main_store.id, account_id=ACCOUNT,
                                        body=[{"name": "PY_GAMMA", "value": SENTINEL, "scopes": ["workers"]}]),
                 cloudflare.ConflictError, SECRET_NAME_TAKEN, "duplicate secret name on create")
    expect_error(lambda: secrets.duplicate(ids["PY_BETA"], account_id=ACCOUNT, store_id=main_store.id,
                                           name="PY_GAMMA", scopes=["workers"]),
                 cloudflare.ConflictError, SECRET_NAME_TAKEN, "duplicate secret name on duplicate")
    expect_error(lambda: secrets.get("f" * 32, account_id=ACCOUNT, store_id=main_store.id),
                 cloudflare.NotFoundError, SECRET_NOT_FOUND, "secrets.get unknown id")
    expect_error(lambda: secrets.create(main_store.id, account_id=ACCOUNT,
                                        body=[{"name": "PY_BAD", "value": SENTINEL, "scopes": ["nope"]}]),
                 cloudflare.BadRequestError, INVALID_SCOPE, "secrets.create unknown scope")
    bad_auth = Cloudflare(api_token="not-a-valid-token", base_url=BASE_URL)
    expect_error(lambda: bad_auth.secrets_store.stores.get(main_store.id, account_id=ACCOUNT),
                 cloudflare.AuthenticationError, UNAUTHENTICATED, "wrong API token")

    # ---- bulk delete ----
    # The SDK's bulk_delete takes no ids and sends an empty body; it must be refused, not
    # taken as "delete everything".
    try:
        secrets.bulk_delete(main_store.id, account_id=ACCOUNT)
        raise AssertionError("bulk_delete without ids succeeded")
    except cloudflare.BadRequestError as err:
        codes = error_codes(err)
        ok(f"bulk_delete without a body -> 400 codes {codes}")
        if INVALID_BATCH not in codes:
            print(f"note: bulk_delete without a body answered codes {codes}, not {INVALID_BATCH} invalid_batch",
                  flush=True)
    remaining = sorted(s.name for s in secrets.list(main_store.id, account_id=ACCOUNT))
    check(len(remaining) == len(specs) + 1, f"a refused bulk delete deleted something: {remaining}")

    doomed = [ids["PY_ALPHA_3"], ids["PY_ALPHA_4"]]
    result = secrets.bulk_delete(main_store.id, account_id=ACCOUNT, extra_body=doomed)
    check(result is None, f"bulk_delete result: {result!r}")
    remaining = sorted(s.name for s in secrets.list(main_store.id, account_id=ACCOUNT))
    check("PY_ALPHA_3" not in remaining and "PY_ALPHA_4" not in remaining and "PY_ALPHA_2" in remaining,
          f"after bulk_delete: {remaining}")
    ok("bulk_delete with ids passed as extra_body")

    # ---- single delete ----
    check(secrets.delete(ids["PY_ALPHA_2"], account_id=ACCOUNT, store_id=main_store.id) is None, "delete result")
    expect_error(lambda: secrets.get(ids["PY_ALPHA_2"], account_id=ACCOUNT, store_id=main_store.id),
                 cloudflare.NotFoundError, SECRET_NOT_FOUND, "get after delete")
    ok("secrets.delete")

    # ---- a second store with a secret, to delete with force ----
    third = stores["py-third"]
    secrets.create(third.id, account_id=ACCOUNT, body=[{"name": "PY_DOOMED", "value": SENTINEL, "scopes": ["workers"]}])
    expect_error(lambda: ss.stores.delete(third.id, account_id=ACCOUNT),
                 cloudflare.ConflictError, STORE_NOT_EMPTY, "delete non-empty store without force")
    check(ss.stores.delete(third.id, account_id=ACCOUNT, force=True) is None, "stores.delete force")
    expect_error(lambda: ss.stores.get(third.id, account_id=ACCOUNT),
                 cloudflare.NotFoundError, STORE_NOT_FOUND, "get deleted store")
    second = stores["py-second"]
    check(ss.stores.delete(second.id, account_id=ACCOUNT) is None, "stores.delete empty store")
    ok("stores.delete (non-empty refused, force=True, empty store)")

    # ---- async client: the same pagination through AsyncCloudflare ----
    async def async_part():
        acf = AsyncCloudflare(api_token=TOKEN, base_url=BASE_URL)
        names = []
        async for s in acf.secrets_store.stores.secrets.list(main_store.id, account_id=ACCOUNT, per_page=2):
            names.append(s.name)
        got = await acf.secrets_store.stores.secrets.get(ids["PY_GAMMA"], account_id=ACCOUNT,
                                                          store_id=main_store.id)
        await acf.close()
        return names, got

    names, got_async = asyncio.run(async_part())
    kept = sorted(s["name"] for s in specs if s["name"] not in ("PY_ALPHA_2", "PY_ALPHA_3", "PY_ALPHA_4"))
    kept = sorted(kept + ["PY_BETA_COPY"])
    check(sorted(names) == kept, f"async list: {names}")
    check(got_async.name == "PY_GAMMA", f"async get: {got_async!r}")
    ok("AsyncCloudflare list (auto-paging) and get")

    quota1 = ss.quota.get(account_id=ACCOUNT)
    check(int(quota1.secrets.usage) == len(kept), f"quota usage {quota1.secrets.usage}, expected {len(kept)}")
    ok(f"quota usage is {len(kept)}")

    print(json.dumps({"kept_store_id": main_store.id, "kept_secret_names": kept,
                      "deleted_store_ids": [second.id, third.id]}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure as a clear message and exit 1
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
