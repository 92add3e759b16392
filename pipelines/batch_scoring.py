"""The batch-scoring pipeline: score a date range of stored transactions with a registered model."""

from kfp import dsl

from components.steps import batch_score_op

PIPELINE_NAME = "rtml-fraud-batch-scoring"


@dsl.pipeline(name=PIPELINE_NAME, description="Score stored transactions with a registered model into the offline table 'scores'.")
def batch_scoring_pipeline(
    feast_home: str,
    offline_dir: str,
    registry_dir: str,
    start: str,
    days: int = 1,
    model_name: str = "fraud-detector",
    version: str = "",
) -> int:
    scored = batch_score_op(feast_home=feast_home, offline_dir=offline_dir, registry_dir=registry_dir,
                            model_name=model_name, version=version, start=start, days=days)
    scored.set_display_name("batch score")
    return scored.outputs["rows"]
