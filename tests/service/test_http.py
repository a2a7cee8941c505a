"""Tier 3: a real `bentoml serve` (2 workers) over HTTP. The module shares one server; the
last test sends its own traffic and stops it with SIGTERM."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.inference_log import LogFileName, read_inference_log
from tests.servers import frame_of

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[str, float]:
    """Sample name with labels -> value, from /metrics."""
    samples = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k == prefix or k.startswith(prefix + "{"))


def test_concurrent_predictions_equal_the_model(server, bodies, trained_entry):
    def call(i):
        return httpx.post(f"{server.url}/predict", json=bodies[i],
                          headers={"X-Request-ID": f"http-{i}"}, timeout=30)

    with ThreadPoolExecutor(16) as pool:  # concurrent: adaptive batching merges them
        responses = list(pool.map(call, range(len(bodies))))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert [r.headers["x-request-id"] for r in responses] == [f"http-{i}"
                                                               for i in range(len(bodies))]
    expected = trained_entry.model.predict_proba(frame_of(bodies, trained_entry.contract))
    got = [r.json()["churn_probability"] for r in responses]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_batch_over_http(server, bodies, trained_entry):
    response = httpx.post(f"{server.url}/predict_batch", json={"customers": bodies}, timeout=30)
    assert response.status_code == 200
    payload = response.json()
    assert payload["summary"]["count"] == len(bodies)
    assert payload["model_version"] == trained_entry.version


def test_a_csv_export_scores_alike_through_churn_score_predict_and_predict_batch(
        server, trained_entry, tmp_path):
    """Rows as a CRM export holds them: yes/no booleans, numbers stored as text (padded, in
    exponent form), blank or "NA" for missing values, padded categories. ``churn score`` on the
    CSV, ``/predict`` and ``/predict_batch`` on its rows (every value a string) answer alike,
    and as for the same customers sent as JSON numbers and booleans."""
    import csv

    import pandas as pd
    from typer.testing import CliRunner

    from churn_cli import app
    from tests.servers import request_bodies

    contract = trained_entry.contract
    typed = request_bodies(trained_entry, 40, prefix="CSV")
    table = pd.DataFrame(typed)
    for i, (name, spec) in enumerate(contract.features.items()):
        column = table[name]
        if spec.type == "boolean":
            yes, no = [("Yes", "No"), ("yes", "no"), ("TRUE", "false"), ("1", "0")][i % 4]
            text = column.map(lambda v, yes=yes, no=no: yes if v else no)
        elif spec.type == "numeric":  # 17 significant digits: the same float, written as text
            text = column.map(lambda v, i=i: "NA" if v is None else
                              f" {v:.17e} " if i % 2 else repr(v))
        else:
            text = column.map(lambda v: f" {v}  ")
        table[name] = text.where(column.notna(), "")
    assert (table["discount_applied"].isin(["Yes", "No", "yes", "no", "TRUE", "false", "1", "0"])
            ).all()
    source, scores = tmp_path / "crm_export.csv", tmp_path / "scores.parquet"
    table.to_csv(source, index=False)

    result = CliRunner().invoke(app, ["score", "--input", str(source), "--output", str(scores)])
    assert result.exit_code == 0, result.output
    assert "rejected 0 rows" in result.output
    offline = pd.read_parquet(scores).set_index(contract.id)

    with source.open(newline="") as handle:
        rows = list(csv.DictReader(handle))  # every value a string, as the file holds it
    assert rows[0]["tenure_days"] == table["tenure_days"][0]
    with ThreadPoolExecutor(8) as pool:
        single = list(pool.map(lambda row: httpx.post(f"{server.url}/predict", json=row,
                                                      timeout=30), rows))
    assert [r.status_code for r in single] == [200] * len(rows), single[0].text
    batch = httpx.post(f"{server.url}/predict_batch", json={"customers": rows}, timeout=30)
    assert batch.status_code == 200, batch.text
    native = httpx.post(f"{server.url}/predict_batch", json={"customers": typed}, timeout=30)

    for answers in ([r.json() for r in single], batch.json()["predictions"],
                    native.json()["predictions"]):
        assert [a["customer_id"] for a in answers] == offline.index.tolist()
        np.testing.assert_allclose([a["churn_probability"] for a in answers],
                                   offline["churn_probability"], rtol=0, atol=1e-12)
        assert [a["risk_level"] for a in answers] == offline["risk_level"].tolist()
        assert [a["will_churn"] for a in answers] == offline["will_churn"].tolist()
        assert [a["unseen_categories"] for a in answers] == [[]] * len(rows)


def test_metrics_add_up_across_two_workers(server, bodies, trained_entry):
    before = scrape(server.url)
    n = 120
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: httpx.post(f"{server.url}/predict", json=bodies[i],
                                                   timeout=30).status_code, range(n)))
    assert codes == [200] * n
    for _ in range(3):
        httpx.post(f"{server.url}/predict", json={**bodies[0], "tenure_days": -5}, timeout=10)
    httpx.post(f"{server.url}/predict", json={**bodies[0], "region": "mars"}, timeout=10)
    after = scrape(server.url)

    def delta(name):
        return total(after, name) - total(before, name)

    assert delta("churn_predictions_total") == n + 1
    assert delta("churn_prediction_probability_count") == n + 1
    buckets = sorted((float(re.search(r'le="([^"]+)"', k).group(1)), v) for k, v in after.items()
                     if k.startswith("churn_prediction_probability_bucket"))
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert buckets[-1][1] == total(after, "churn_prediction_probability_count")
    failures = [k for k in after if k.startswith("churn_validation_failures_total")
                and 'reason="greater_than_equal"' in k and 'endpoint="predict"' in k]
    assert failures and after[failures[0]] - before.get(failures[0], 0) == 3
    assert sum(v for k, v in after.items()
               if k.startswith('churn_unseen_categories_total{feature="region"')) >= 1
    ok = [k for k in after if k.startswith("churn_requests_total")
          and 'endpoint="predict"' in k and 'code="200"' in k]
    assert ok and after[ok[0]] - before.get(ok[0], 0) == n + 1
    assert delta("churn_request_duration_seconds_count") == n + 4  # 200s and 400s alike
    # Every churn_* series names the served version: stable and canary stay apart.
    version = f'model_version="{trained_entry.version}"'
    unlabelled = [k for k in after if k.startswith("churn_") and version not in k]
    assert not unlabelled, unlabelled
    # ... and so does every JSON log line of both workers.
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines()
             if line.startswith('{"time"')]
    assert any(line["logger"] == "churn.service.access" for line in lines)
    assert {line["model_version"] for line in lines} == {trained_entry.version}
    info = [k for k in after if k.startswith("churn_model_info")]
    assert len(info) == 1 and after[info[0]] == 1  # one series for 2 workers, not one per pid
    assert total(after, "churn_model_test_roc_auc") > 0.5
    assert "bentoml_service_request_total" in " ".join(after)


# Beside schemathesis (tests/service/test_openapi.py: every check, on what the document says):
# hypothesis strategies built from the served OpenAPI document that mix valid values with junk
# it does not describe (wrong types anywhere, extra fields, raw text and bytes).
JUNK = st.sampled_from([None, "", "12", "x" * 200, True, -1, 1e308, -1e308, [1], {"a": 1}])


def _from_property(schema: dict, clean: bool) -> st.SearchStrategy:
    if "oneOf" in schema:  # the JSON type, then text the contract reads (numbers, yes/no...)
        members = [_from_property(member, True) for member in schema["oneOf"]]
        # Text members do not carry the bounds of a number: a clean customer sends JSON types.
        return members[0] if clean else st.one_of(*members, JUNK)
    if "enum" in schema:
        good = st.sampled_from(schema["enum"])
    elif "pattern" in schema:
        good = st.from_regex(schema["pattern"], fullmatch=True)
    elif schema.get("type") == "number":
        good = st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False,
                         allow_infinity=False)
    elif schema.get("type") == "boolean":
        good = st.booleans()
    else:
        good = st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 20), 20))
    if "not" in schema:  # text read as null (or a listed value as sent)
        refused = schema["not"]
        good = good.filter(lambda v: v not in refused.get("enum", []) and not (
            "pattern" in refused and re.search(refused["pattern"], v)))
    if schema.get("nullable"):
        good = good | st.none()
    return good if clean else st.one_of(good, good, good, good, JUNK)


@st.composite
def _customer(draw, schema: dict) -> dict:
    """Half the time a valid customer; else any field may be junk, omitted, or extra."""
    clean = draw(st.booleans())
    body = {}
    for name, prop in schema["properties"].items():
        required = name in schema.get("required", [])
        if (not clean and not draw(st.integers(0, 30))) or (
                clean and not required and draw(st.booleans())):
            continue  # omitted
        body[name] = draw(_from_property(prop, clean))
    if not clean and not draw(st.integers(0, 30)):
        body[draw(st.text(min_size=1, max_size=5))] = 1
    return body


def test_workers_start_with_the_process_settings_of_the_service(server):
    """The memory and OpenMP settings (service.config.PROCESS_ENVIRONMENT) must be in each
    worker's environment from its start: glibc and OpenMP read them once, when it starts."""
    from service.config import PROCESS_ENVIRONMENT

    workers = [p for p in psutil.Process(server.popen.pid).children(recursive=True)
               if "_bentoml_impl.worker.service" in " ".join(p.cmdline())]
    assert len(workers) == 2
    for worker in workers:
        started_with = worker.environ()  # /proc/<pid>/environ: as the process was started
        assert {k: started_with.get(k) for k in PROCESS_ENVIRONMENT} == PROCESS_ENVIRONMENT


def test_generated_requests_never_get_a_server_error(server):
    spec = httpx.get(f"{server.url}/docs.json", timeout=10).json()
    customer = spec["components"]["schemas"]["Customer"]
    bodies = st.one_of(
        st.tuples(st.just("/predict"), _customer(customer)),
        st.tuples(st.just("/predict_batch"), st.builds(
            lambda rows: {"customers": rows}, st.lists(_customer(customer), max_size=4))),
        st.tuples(st.sampled_from(["/predict", "/predict_batch"]),
                  JUNK | st.text(max_size=30) | st.binary(max_size=30)),
    )
    seen: set[int] = set()

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(bodies)
    def check(request):
        path, body = request
        if isinstance(body, bytes | str):
            response = httpx.post(f"{server.url}{path}", content=body, timeout=30)
        else:
            response = httpx.post(f"{server.url}{path}", json=body, timeout=30)
        seen.add(response.status_code)
        assert response.status_code < 500, response.text
        if response.status_code == 400:
            detail = response.json()["detail"]
            assert detail and all("loc" in d and "msg" in d for d in detail)
        assert "Traceback" not in response.text

    check()
    assert {200, 400} <= seen


def test_sigterm_writes_every_prediction_to_the_inference_log(server, bodies):
    with ThreadPoolExecutor(16) as pool:  # traffic right before the stop, still queued
        codes = list(pool.map(lambda i: httpx.post(
            f"{server.url}/predict", json=bodies[i % len(bodies)],
            headers={"X-Request-ID": f"last-{i}"}, timeout=30).status_code, range(300)))
    assert codes == [200] * 300
    served = total(scrape(server.url), "churn_predictions_total")
    assert server.stop() is not None  # SIGTERM, then wait for the exit
    log = read_inference_log(server.log_dir)
    assert len(log) == served  # everything the module's server answered, not just this test's
    assert {f"last-{i}" for i in range(300)} <= set(log["request_id"])
    pids = {LogFileName.parse(p.name).pid for p in server.log_dir.glob("inferences-*.arrows")}
    assert len(pids) == 2, "both workers served and flushed their own file"
