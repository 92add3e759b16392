"""CLI flags: our dashed flags, the KServe controller's underscore spellings, settings per role."""

from __future__ import annotations

from inference.__main__ import parse_args
from inference.server import settings_for
from inference.settings import PredictorSettings, ServingSettings, TransformerSettings


def test_kserve_controller_flags_are_understood_and_extra_ones_ignored(capsys):
    args = parse_args(["--role", "transformer", "--model_name", "fd", "--http_port", "8081", "--predictor_host", "p:80", "--workers", "1"])
    assert (args.role, args.model_name, args.http_port, args.predictor_host) == ("transformer", "fd", 8081, "p:80")
    assert "ignoring --workers 1" in capsys.readouterr().err


def test_each_role_gets_its_settings_class_with_overrides():
    assert type(settings_for("predictor", http_port=9000)) is PredictorSettings
    t = settings_for("transformer", predictor_host="p:80", grpc_port=None)
    assert type(t) is TransformerSettings and t.predictor_host == "p:80" and t.grpc_port == 8081
    assert type(settings_for("all")) is ServingSettings and settings_for("all").predictor_suffix == "-predictor"


def test_canary_flags_reach_the_settings_and_stay_off_the_predictor():
    args = parse_args(["--candidate-storage-uri", "/m/2", "--canary-percent", "30", "--candidate_predictor_host", "c:80"])
    assert (args.candidate_storage_uri, args.canary_percent, args.candidate_predictor_host) == ("/m/2", 30.0, "c:80")
    s = settings_for("all", **{k: v for k, v in vars(args).items() if k != "role"})
    assert (s.candidate_storage_uri, s.canary_percent) == ("/m/2", 30.0)
    assert settings_for("transformer").canary_percent == 0.0 and settings_for("transformer").score_stream_queue == 1000
