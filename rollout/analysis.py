"""The canary's traffic from Prometheus: per track, what it served now, counted exactly.

``churn canary analyze`` judges the canary with the model judge (``monitoring.judge``): its
predictions from the inference log, its requests, failures, rejected input and latency from
Prometheus, through the queries written here once.

Series are told apart by ``track`` (stable | canary: a pod label the scrape copies, ServiceMonitor
``podTargetLabels`` in Kubernetes, ``static_configs`` labels locally). Within a track only what
it serves *now* counts: a series is kept only if its instance (and pod) serves the same model
version now, as ``churn_model_info`` says at the time of the query. A canary whose model or
image was just changed is therefore judged on its own requests from the first one, never on
its predecessor's, which stay in Prometheus for the rest of the window (its pods are gone, or
its instance serves another version).

Counts are what was served, not ``increase()``'s estimate: ``increase()`` extrapolates to the
window's edges and read 16% high on a short burst of traffic, and the judge's tests decide on
counts. A series present at both ends of the window counts its last value minus its value at
the start. One born inside the window counts from zero (the service creates every series at
zero) when its instance loaded its model inside the window too (a new pod, a new version:
``churn_model_loaded_timestamp_seconds``). A series that reset inside the window (a restarted
container), or that Prometheus began to scrape late, falls back to ``increase()``.
"""

from __future__ import annotations

from rollout.config import AnalysisSettings, duration_seconds

TRACKS = ("stable", "canary")
MODEL_INFO = "churn_model_info"
MODEL_LOADED = "churn_model_loaded_timestamp_seconds"
# The predictions that answered: a shadow model's (service/shadow.py) never reach a client.
CHAMPION = 'role!="shadow"'
# Upper edges of the probability bins the dashboards' canary rows compare (a subset of the
# service's probability buckets, service/metrics.py; the last bin runs to +Inf). Dense below
# 0.2 because churn scores are: three quarters score below 0.2.
PSI_BIN_EDGES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
BIN_RECORD = "churn:prediction_probability_bin:count"
PROBABILITY_BUCKET = "churn_prediction_probability_bucket"


def number(value: float) -> str:
    """A number as PromQL prints it (500, 0.1, 1.5)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))



def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Series:
    """Selectors and sums for one track over one window, restricted to what it serves now."""

    def __init__(self, settings: AnalysisSettings, window: str, track: str):
        self.match = settings.match
        self.identity = ", ".join(settings.identity_labels)
        self.window = window
        self.track = track

    def selector(self, *extra: str) -> str:
        matchers = [f"track={_quote(self.track)}",
                    *(f"{k}={_quote(v)}" for k, v in sorted(self.match.items())), *extra]
        return "{" + ", ".join(matchers) + "}"

    def current(self) -> str:
        """The track's instances as they are now, each with the version it serves now."""
        return f"{MODEL_INFO}{self.selector()}"

    def served(self, metric: str, *extra: str) -> str:
        """Per series, what the counter counted in the window (exactly: see the module's
        docstring), for the series of what the track serves now only. One line: it is
        nested in every query."""
        s, w = f"{metric}{self.selector(*extra)}", self.window
        loaded_inside = (f"{MODEL_LOADED}{self.selector()} > time() - "
                         f"{duration_seconds(self.window)}")
        counted = (f"({s} - {s} offset {w}) unless resets({s}[{w}]) > 0"
                   f" or (({s} unless {s} offset {w}) and on ({self.identity}) {loaded_inside})"
                   f" or increase({s}[{w}])")
        return f"(({counted}) and on ({self.identity}) {self.current()})"

    def increase(self, metric: str, *extra: str) -> str:
        return f"sum{self.served(metric, *extra)}"

    def requests(self, *extra: str) -> str:
        # "other" is any path that is not an endpoint (a scanner's 404s): not traffic.
        return self.increase("churn_requests_total", 'endpoint!="other"', *extra)

    def predictions(self, *extra: str) -> str:
        return self.increase("churn_predictions_total", CHAMPION, *extra)

    def latency_quantile(self, quantile: float, endpoint: str) -> str:
        buckets = ("sum by (le) " + self.served("churn_request_duration_seconds_bucket",
                                                f"endpoint={_quote(endpoint)}"))
        # "> 0" drops the NaN a quantile of no requests is: no data, not a number.
        return f"histogram_quantile({quantile}, {buckets}) > 0"


def track_queries(settings: AnalysisSettings, window: str | None = None
                  ) -> dict[str, dict[str, str]]:
    """Per input of the canary judge, its PromQL per track over ``window`` (default the
    config's): requests, failed (5xx and 429: the service shed load), rejected (4xx but 429:
    input the contract refused), /predict latency p95 and p99, predictions."""
    window = window or settings.window
    side = {track: _Series(settings, window, track) for track in TRACKS}
    endpoint = settings.latency_endpoint

    def per_track(build) -> dict[str, str]:
        return {track: build(series) for track, series in side.items()}

    # A status with no series yet (never answered): "or vector(0)", a count of zero, when the
    # track has requests at all; no requests at all is no data.
    def counted(*codes: str):
        return lambda t: f"({t.requests(*codes)} or vector(0)) and on () {t.requests()}"

    return {
        "requests": per_track(lambda t: t.requests()),
        "failed": per_track(counted('code=~"5..|429"')),
        "rejected": per_track(counted('code=~"4.."', 'code!="429"')),
        "latency_p95": per_track(lambda t: t.latency_quantile(0.95, endpoint)),
        "latency_p99": per_track(lambda t: t.latency_quantile(0.99, endpoint)),
        "predictions": per_track(_Series.predictions),
    }


def served_versions_query(settings: AnalysisSettings) -> str:
    """Which model versions each track serves now, on how many instances."""
    return f"count by (track, model_version, model_tag) ({_both_tracks(settings)})"


def serving_since_query(settings: AnalysisSettings, window: str | None = None) -> str:
    """Per track and version served now: when its earliest instance loaded it (unix seconds):
    where what the track serves now began. Counts (``served``) and the inference log's
    records are both taken from there when it is inside the window."""
    info = _both_tracks(settings)
    loaded = info.replace(MODEL_INFO, MODEL_LOADED, 1)
    on = ", ".join(["track", *settings.identity_labels])
    return f"min by (track, model_version) ({loaded} and on ({on}) {info})"


def _both_tracks(settings: AnalysisSettings) -> str:
    matchers = ", ".join([f"track=~{_quote('|'.join(TRACKS))}",
                          *(f"{k}={_quote(v)}" for k, v in sorted(settings.match.items()))])
    return f"{MODEL_INFO}{{{matchers}}}"


def bin_recording_rules() -> list[dict]:
    """Per-bin counters from the cumulative probability buckets, one rule per bin, every label
    kept. Both buckets come from the same scrape of the same pod and reset together, so their
    difference is itself a counter that ``increase()`` can read."""
    from prometheus_client.utils import floatToGoString

    edges = [None, *PSI_BIN_EDGES, None]
    rules = []
    for lower, upper in zip(edges[:-1], edges[1:], strict=True):
        upper_le = "+Inf" if upper is None else floatToGoString(upper)
        expr = f'sum without (le) ({PROBABILITY_BUCKET}{{le="{upper_le}"}})'
        if lower is not None:
            expr += f' - sum without (le) ({PROBABILITY_BUCKET}{{le="{floatToGoString(lower)}"}})'
        name = f"{number(lower or 0)}-{number(upper) if upper is not None else '1'}"
        rules.append({"record": BIN_RECORD, "expr": expr, "labels": {"bin": name}})
    return rules
