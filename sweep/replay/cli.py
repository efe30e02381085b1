"""The command line, parsed in this one place: SOURCES, then Hydra-style words (docs/sweeps.md, "Replay")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.replay.run import Settings
from sweep.replay.strategy import StrategySpec


def _replay_config(name: str, settings: Any) -> Any:
    """`replay=NAME`: conf/replay/NAME.yaml over default.yaml's settings, its strategies instead of them."""
    from omegaconf import OmegaConf

    from src.config import CONF_DIR

    chosen = CONF_DIR / "replay" / f"{name}.yaml"
    if not chosen.is_file():
        options = ", ".join(sorted(p.stem for p in chosen.parent.glob("*.yaml")))
        raise SystemExit(f"replay={name}: no conf/replay/{name}.yaml (options: {options}).")
    kept = OmegaConf.masked_copy(settings, [k for k in settings if k != "strategies"])
    return OmegaConf.merge(kept, OmegaConf.load(chosen))


def parse_arguments(argv: list[str]) -> tuple[list[Path], dict[str, StrategySpec], Settings]:
    """SOURCES (curves CSVs or sweep folders; none: replay.sources), then Hydra-style words:
    replay=NAME (the strategies of conf/replay/NAME.yaml instead of default.yaml's; its other keys
    override default.yaml's), hparams_search=a,b (strategies), replay.KEY=VALUE, other overrides (applied
    to every strategy). Without hparams_search, the strategies of the replay config."""
    from omegaconf import OmegaConf

    from src.config import CONF_DIR

    sources = []
    while argv and "=" not in argv[0]:
        sources.append(Path(argv[0]))
        argv = argv[1:]
    config = OmegaConf.load(CONF_DIR / "replay" / "default.yaml")
    presets, common, replay_words = None, [], []
    for word in argv:
        key, _, value = word.partition("=")
        if key == "replay":
            config = _replay_config(value, config)
        elif key == "hparams_search":
            presets = value.split(",")
        elif key.startswith("replay."):
            replay_words.append(word.removeprefix("replay."))
        else:
            common.append(word)
    config = OmegaConf.to_container(OmegaConf.merge(config, OmegaConf.from_dotlist(replay_words)))
    if not sources:  # the recorded grids, named from the repository root
        sources = [p if p.is_absolute() else CONF_DIR.parent / p for p in map(Path, config["sources"])]
    if presets is None:
        specs = {name: StrategySpec.from_config(node) for name, node in config["strategies"].items()}
    else:
        specs = {name: StrategySpec([f"hparams_search={name}"]) for name in presets}
    for spec in specs.values():
        spec.overrides = [*spec.overrides, *common]
    settings = Settings(
        seeds=int(config["seeds"]),
        budgets=[float(b) for b in config["budgets"]],
        target_budget=float(config["target_budget"]),
        output=config.get("output"),
        curves=str(config.get("curves", "mean")),
    )
    return sources, specs, settings
