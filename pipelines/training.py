"""The training pipeline: dataset -> train -> evaluate (candidate vs champion) -> register -> deploy (gated)."""

from kfp import dsl

from components.steps import dataset_op, deploy_op, evaluate_op, register_op, train_op

PIPELINE_NAME = "rtml-fraud-training"


@dsl.pipeline(name=PIPELINE_NAME, description="Point-in-time Feast data, PyTorch fraud model, champion/challenger gate, canary.")
def training_pipeline(
    feast_home: str,
    offline_dir: str,
    registry_dir: str,
    train_start: str = "2018-07-25",
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
    model_name: str = "fraud-detector",
    seed: int = 0,
    max_epochs: int = 40,
    refit: bool = True,
    device: str = "auto",
    tolerance: float = 0.01,
    canary_percent: int = 10,
    model_registry_server: str = "",
    model_registry_port: int = 443,
    kubernetes: bool = False,
    isvc_name: str = "fraud-detector",
    namespace: str = "rtml",
    storage_uri_template: str = "pvc://rtml-models/{name}/{version}",
) -> str:
    data = dataset_op(feast_home=feast_home, offline_dir=offline_dir, train_start=train_start, train_days=train_days,
                      delay_days=delay_days, test_days=test_days, seed=seed)
    data.set_display_name("point-in-time dataset")
    trained = train_op(train_set=data.outputs["train_set"], validation_set=data.outputs["validation_set"], seed=seed,
                       max_epochs=max_epochs, refit=refit, device=device)
    trained.set_display_name("train")
    evaluated = evaluate_op(test_set=data.outputs["test_set"], model=trained.outputs["model"], registry_dir=registry_dir,
                            model_name=model_name)
    evaluated.set_display_name("evaluate vs champion")
    registered = register_op(model=trained.outputs["model"], evaluation=evaluated.outputs["evaluation"],
                             dataset_info=data.outputs["dataset_info"], registry_dir=registry_dir, model_name=model_name,
                             model_registry_server=model_registry_server, model_registry_port=model_registry_port)
    registered.set_display_name("register")
    deployed = deploy_op(registry_dir=registry_dir, model_name=model_name, version=registered.output,
                         evaluation=evaluated.outputs["evaluation"], tolerance=tolerance, canary_percent=canary_percent,
                         kubernetes=kubernetes, isvc_name=isvc_name, namespace=namespace,
                         storage_uri_template=storage_uri_template)
    deployed.set_display_name("quality gate and deploy")
    return deployed.outputs["Output"]
