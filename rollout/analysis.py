"""The canary analysis: canary against stable over the same window, written once in PromQL.

This module is the one owner of the canary PromQL. ``churn canary analyze`` runs these queries,
the Argo Rollouts AnalysisTemplate and the Prometheus rules (``rollout.render``) are rendered
from them, and tests prove all three carry the same text.

Series are told apart by ``track`` (stable | canary: a pod label the scrape copies, ServiceMonitor
``podTargetLabels`` in Kubernetes, ``static_configs`` labels locally). Within a track only what
it serves *now* counts: a series is kept only if its instance (and pod) serves the same model
version now, as ``churn_model_info`` says at the time of the query. A canary whose model or
image was just changed is therefore judged on its own predictions from the first one, never on
its predecessor's, which stay in Prometheus for the rest of the window (its pods are gone, or
its instance serves another version). Each check has

- per-track queries (what the table shows for stable and for canary), and
- one comparison query: a single value (a difference, a ratio, a PSI), the number that is judged.

Counts are what was served, not ``increase()``'s estimate: ``increase()`` extrapolates to the
window's edges and read 16% high on a short burst of traffic, and the gates decide on the
counts. A series present at both ends of the window counts its last value minus its value at
the start. One born inside the window counts from zero (the service creates every series at
zero) when its instance loaded its model inside the window too (a new pod, a new version:
``churn_model_loaded_timestamp_seconds``). A series that reset inside the window (a restarted
container), or that Prometheus began to scrape late, falls back to ``increase()``.

Gates first: every comparison is joined with ``and on () (<gate> >= N)``, so with too little
traffic on either track it returns *nothing*; no data is inconclusive, never a pass. Only the
gates themselves (requests, predictions) are judged "enough / not enough".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rollout.config import AnalysisSettings, duration_seconds

Verdict = Literal["pass", "fail", "inconclusive"]
Kind = Literal["gate", "limit"]
TRACKS = ("stable", "canary")

# Upper edges of the PSI bins, a subset of the service's probability buckets
# (service/metrics.py); the last bin runs to +Inf. Dense below 0.2 because churn scores are:
# on the embedded data the median is 0.06 and three quarters score below 0.2, so equal-width
# deciles would put 70% of the customers in two bins (docs/canary.md).
PSI_BIN_EDGES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
BIN_RECORD = "churn:prediction_probability_bin:count"
MODEL_INFO = "churn_model_info"
# The predictions that answered: a shadow model's (service/shadow.py) never reach a client.
CHAMPION = 'role!="shadow"'
MODEL_LOADED = "churn_model_loaded_timestamp_seconds"
PROBABILITY_BUCKET = "churn_prediction_probability_bucket"


@dataclass(frozen=True)
class Check:
    """One row of the verdict: what is compared, how, and the limit."""

    name: str
    title: str
    kind: Kind  # gate: enough traffic, else inconclusive; limit: at most ``threshold``, else fail
    unit: str
    threshold: float
    compare: str  # PromQL: one value, or nothing
    per_track: dict[str, str] | None  # PromQL per track (None: only the comparison exists)
    meaning: str
    gate: str | None = None  # the gate check whose traffic this one waits for
    signed: bool = True  # canary minus stable; False: a distance (|difference|, PSI)

    def judge(self, value: float | None) -> Verdict:
        """The verdict on the comparison's value; None or NaN (no data) is inconclusive."""
        if value is None or math.isnan(value):
            return "inconclusive"
        if self.kind == "gate":
            return "pass" if value >= self.threshold else "inconclusive"
        return "pass" if value <= self.threshold else "fail"

    def argo_conditions(self) -> tuple[str, str]:
        """(successCondition, failureCondition) for Argo Rollouts with the same meaning as
        ``judge``: when neither holds (an empty result, NaN, a gate not met) Argo reports the
        measurement Inconclusive and pauses the rollout."""
        limit = number(self.threshold)
        present = "len(result) == 1 && !isNaN(result[0])"
        if self.kind == "gate":
            # Too little traffic is never a failure: only a success or nothing.
            return f"{present} && result[0] >= {limit}", "false"
        return f"{present} && result[0] <= {limit}", f"len(result) == 1 && result[0] > {limit}"


def number(value: float) -> str:
    """A threshold as PromQL and Argo print it (500, 0.1, 1.5)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def overall(verdicts: list[Verdict]) -> Verdict:
    """Fail if any check fails; else inconclusive if any is; else pass."""
    if "fail" in verdicts:
        return "fail"
    return "inconclusive" if "inconclusive" in verdicts else "pass"


# ------------------------------------------------------------------ PromQL building blocks


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

    def status_ratio_pp(self, *codes: str) -> str:
        # No series until the first such status: "or vector(0)" makes that a 0, not no data
        # (the denominator still is no data when the track has no requests at all).
        counted = self.requests(*codes)
        return f"100 * ({counted} or vector(0)) / {self.requests()}"

    def latency_quantile(self, quantile: float, endpoint: str) -> str:
        buckets = ("sum by (le) " + self.served("churn_request_duration_seconds_bucket",
                                                f"endpoint={_quote(endpoint)}"))
        # "> 0" drops the NaN a quantile of no requests is: no data, not a number.
        return f"histogram_quantile({quantile}, {buckets}) > 0"

    def risk_share_pp(self, levels: str) -> str:
        flagged = self.predictions(f"risk_level=~{_quote(levels)}")
        return f"100 * {flagged} / {self.predictions()}"

    def mean_probability(self) -> str:
        return (f"{self.increase('churn_prediction_probability_sum', CHAMPION)} / "
                f"{self.increase('churn_prediction_probability_count', CHAMPION)}")

    def unseen_pp(self) -> str:
        unseen = self.increase("churn_unseen_categories_total")
        return f"100 * ({unseen} or vector(0)) / {self.predictions()}"

    def bin_shares(self, epsilon: float) -> str:
        """Share of predictions per PSI bin (label ``bin``), floored at ``epsilon`` so that
        an empty bin keeps the logarithm finite (as ``monitoring.psi`` does)."""
        per_bin = "sum by (bin) " + self.served(BIN_RECORD, CHAMPION)
        total = self.increase("churn_prediction_probability_count", CHAMPION)
        return f"clamp_min({per_bin} / on () group_left {total}, {number(epsilon)})"


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def _smaller(canary: str, stable: str) -> str:
    """The smaller of two single values, or nothing if either is missing (``a <= b`` keeps
    a only when it is the smaller; ``or`` falls back to b only when that left side is empty)."""
    return (f"(\n  {canary}\n  <= {stable}\n)\nor (\n  {stable}\n  < {canary}\n)")


def _gated(comparison: str, gate: Check) -> str:
    return (f"(\n{_indent(comparison)}\n)\nand on () (\n  (\n"
            f"{_indent(gate.compare, '    ')}\n  )\n  >= {number(gate.threshold)}\n)")


# ------------------------------------------------------------------ the checks


def checks(settings: AnalysisSettings, window: str | None = None) -> list[Check]:
    """Every check of the analysis, in report order, over ``window`` (default: the config's)."""
    window = window or settings.window
    side = {track: _Series(settings, window, track) for track in TRACKS}
    c, s = side["canary"], side["stable"]

    def tracks(build) -> dict[str, str]:
        return {track: build(side[track]) for track in TRACKS}

    requests = Check(
        "requests", "requests (smaller track)", "gate", "", settings.min_requests,
        _smaller(c.requests(), s.requests()), tracks(lambda t: t.requests()),
        "HTTP checks need this many requests on each track")
    predictions = Check(
        "predictions", "predictions (smaller track)", "gate", "", settings.min_predictions,
        _smaller(c.predictions(), s.predictions()), tracks(_Series.predictions),
        "prediction checks need this many scored customers on each track")

    def limit(name, title, unit, threshold, per_track, compare, gate, meaning,
              signed=True) -> Check:
        return Check(name, title, "limit", unit, threshold, _gated(compare, gate), per_track,
                     meaning, gate.name, signed)

    def difference(build) -> str:
        return f"({build(c)})\n- ({build(s)})"

    def absolute_difference(build) -> str:
        return f"abs(\n  ({build(c)})\n  - ({build(s)})\n)"

    def latency_ratio(build) -> str:
        floor = number(settings.latency_floor_seconds)
        return f"({build(c)})\n/ clamp_min({build(s)}, {floor})"

    def status_ratio(*codes):
        return lambda t: t.status_ratio_pp(*codes)

    # 429 is the service shedding load (max_in_flight), not the client's input: it counts
    # with the failures. Everything else in 4xx is input refused by the contract.
    failed, rejected = status_ratio('code=~"5..|429"'), status_ratio('code=~"4.."',
                                                                     'code!="429"')

    def quantile(q):
        return lambda t: t.latency_quantile(q, settings.latency_endpoint)

    def share(levels):
        return lambda t: t.risk_share_pp(levels)

    eps = settings.psi_epsilon
    shares_c, shares_s = c.bin_shares(eps), s.bin_shares(eps)
    psi = (f"sum(\n  (\n    {shares_c}\n    - {shares_s}\n  )\n"
           f"  * ln(\n    {shares_c}\n    / {shares_s}\n  )\n)")
    endpoint = settings.latency_endpoint
    return [
        requests,
        limit("failed_requests", "failed requests (5xx, 429 shed)", "pp",
              settings.max_failed_increase_pp, tracks(failed), difference(failed), requests,
              "requests the service failed or shed per 100, canary minus stable"),
        limit("rejected_input", "rejected input (4xx but 429)", "pp",
              settings.max_rejected_increase_pp, tracks(rejected), difference(rejected),
              requests,
              "requests refused as bad input per 100, canary minus stable: the same clients "
              "send the same data to both, so a rise means the canary rejects what stable takes"),
        limit("latency_p95", f"/{endpoint} p95 latency", "x", settings.max_p95_latency_ratio,
              tracks(quantile(0.95)), latency_ratio(quantile(0.95)), requests,
              "canary p95 / stable p95 (stable counted as at least the latency floor)"),
        limit("latency_p99", f"/{endpoint} p99 latency", "x", settings.max_p99_latency_ratio,
              tracks(quantile(0.99)), latency_ratio(quantile(0.99)), requests,
              "canary p99 / stable p99 (stable counted as at least the latency floor)"),
        predictions,
        limit("will_churn_share", "share will_churn (MEDIUM+HIGH)", "pp",
              settings.max_will_churn_share_diff_pp, tracks(share("MEDIUM|HIGH")),
              absolute_difference(share("MEDIUM|HIGH")), predictions,
              "customers flagged at the business threshold per 100, |canary - stable|",
              signed=False),
        limit("high_share", "share HIGH risk", "pp", settings.max_high_share_diff_pp,
              tracks(share("HIGH")), absolute_difference(share("HIGH")), predictions,
              "customers rated HIGH per 100, |canary - stable|", signed=False),
        limit("mean_probability", "mean churn probability", "",
              settings.max_mean_probability_diff, tracks(_Series.mean_probability),
              absolute_difference(_Series.mean_probability), predictions,
              "|canary - stable| mean predicted probability", signed=False),
        limit("probability_psi", "probability PSI", "", settings.max_probability_psi, None, psi,
              predictions, "population stability index of the two probability histograms",
              signed=False),
        limit("unseen_categories", "unseen categories", "pp", settings.max_unseen_increase_pp,
              tracks(_Series.unseen_pp), difference(_Series.unseen_pp), predictions,
              "never-seen category values per 100 predictions, canary minus stable"),
    ]


def served_versions_query(settings: AnalysisSettings) -> str:
    """Which model versions each track serves now, on how many instances."""
    return f"count by (track, model_version, model_tag) ({_both_tracks(settings)})"


def serving_since_query(settings: AnalysisSettings, window: str | None = None) -> str:
    """Per track and version served now: the time (unix seconds) of its first sample within
    the window (or just before it): where the data the analysis compares begins."""
    window = window or settings.window
    info = _both_tracks(settings)
    on = ", ".join(["track", *settings.identity_labels])
    return (f"min by (track, model_version) (min_over_time(timestamp({info})[{window}:]) "
            f"and on ({on}) {info})")


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
