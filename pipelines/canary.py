"""The canary-analysis pipeline: compare the canary with the champion in Prometheus, then promote or roll back.

Run it (or schedule it with ``cron``) while a canary serves its share of the traffic; ``wait`` means
not enough canary traffic yet, so a recurring run decides once there is.
"""

from kfp import dsl

from components.canary_analysis import Thresholds
from components.steps import canary_analysis_op

PIPELINE_NAME = "rtml-fraud-canary-analysis"


@dsl.pipeline(name=PIPELINE_NAME, description="Canary vs champion in Prometheus (errors, p99, score PSI); promote or roll back.")
def canary_pipeline(
    prometheus_url: str,
    canary_version: str,
    champion_version: str,
    model_name: str = "fraud-detector",
    window: str = "10m",
    min_requests: int = Thresholds.min_requests,
    max_error_rate: float = Thresholds.max_error_rate,
    max_error_rate_increase: float = Thresholds.max_error_rate_increase,
    max_p99_ratio: float = Thresholds.max_p99_ratio,
    p99_slack_seconds: float = Thresholds.p99_slack_seconds,
    max_score_psi: float = Thresholds.max_score_psi,
    apply: bool = False,
    isvc_name: str = "fraud-detector",
    namespace: str = "rtml",
    deployment_mode: str = "",
    canary_name: str = "",
) -> str:
    analysis = canary_analysis_op(prometheus_url=prometheus_url, model_name=model_name, canary_version=canary_version,
                                  champion_version=champion_version, window=window, min_requests=min_requests,
                                  max_error_rate=max_error_rate, max_error_rate_increase=max_error_rate_increase,
                                  max_p99_ratio=max_p99_ratio, p99_slack_seconds=p99_slack_seconds,
                                  max_score_psi=max_score_psi, apply=apply, isvc_name=isvc_name, namespace=namespace,
                                  deployment_mode=deployment_mode, canary_name=canary_name)
    analysis.set_display_name("canary analysis")
    return analysis.outputs["Output"]
