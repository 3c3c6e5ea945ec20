import pytest
import yaml

from gtcrn.config import ConfigError, LossConfig, ModelConfig, RunConfig, from_dict, load_yaml, to_dict


def test_presets_differ_only_by_overrides():
    g32 = ModelConfig.preset("gtcrn-g32")
    off = ModelConfig.preset("gtcrn-official")
    assert g32 == ModelConfig()  # the default dataclass is the g32 design
    assert (g32.num_bins, off.num_bins) == (128, 129)
    assert off.encoder == "official" and not off.skip_fusion


def test_unknown_preset_is_an_error():
    with pytest.raises(ConfigError, match="unknown preset"):
        ModelConfig.preset("gtcrn-g64")


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="stem_grups"):
        from_dict(ModelConfig, {"stem_grups": 4})


def test_type_errors_name_the_key():
    with pytest.raises(ConfigError, match="stem_groups"):
        from_dict(ModelConfig, {"stem_groups": "four"})
    with pytest.raises(ConfigError, match="skip_fusion"):
        from_dict(ModelConfig, {"skip_fusion": 1})


@pytest.mark.parametrize("groups", [3, 5, 64])
def test_stem_groups_must_divide_the_bands(groups):
    with pytest.raises(ConfigError, match="stem_groups"):
        ModelConfig(stem_groups=groups)


def test_round_trip_through_yaml(tmp_path):
    cfg = ModelConfig(stem_groups=4, dilations=(1, 2, 4))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    back = from_dict(ModelConfig, load_yaml(path))
    assert back == cfg and isinstance(back.dilations, tuple)


def test_int_promoted_to_float_but_not_bool():
    assert from_dict(LossConfig, {"ri_weight": 3}).ri_weight == 3.0
    with pytest.raises(ConfigError):
        from_dict(LossConfig, {"ri_weight": True})


def test_yaml_top_level_must_be_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(path)


def test_yaml_exponent_without_decimal_point_is_a_float(tmp_path):
    path = tmp_path / "l.yaml"
    path.write_text("eps: 1e-5\nri_weight: 2.5e1\n")
    cfg = from_dict(LossConfig, load_yaml(path))
    assert cfg.eps == 1e-5 and cfg.ri_weight == 25.0
    with pytest.raises(ConfigError, match="eps"):
        from_dict(LossConfig, {"eps": "small"})


@pytest.mark.parametrize("text,where", [("train: [1,2\n", "line 2, column 1"),
                                        ("a: 1\n  b: 2\n", "line 2, column 4"),
                                        ("x: 'open\n", "line 2, column 1")])
def test_malformed_yaml_names_the_file_line_and_column(tmp_path, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        RunConfig.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {where}: ") and "\n" not in message
    assert message.count(str(path)) == 1
