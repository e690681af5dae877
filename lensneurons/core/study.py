"""One frame for every study: a config dataclass, presets as data, a command line generated from the fields.

A study's configuration is a dataclass deriving from `StudyConfig` whose fields are declared with
`param(default, "help")`: the defaults are the paper's values, `presets` maps a preset name to the fields
it changes, and every field becomes a flag (`n_pairs` → `--n-pairs`) with its help text. A `Study` ties
the configuration to the study's `run(model, cfg, out, data=…, progress=…)`; the CLI loads the data
first (`prepare`), so a missing dataset fails before the model takes its time to load.

Results folders follow `ResultsFolder.claim` (see `lensneurons.core.results`).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["StudyConfig", "Study", "param"]


MODEL_HELP = ("embedded model (gemma-3-270m, smollm2-135m-instruct), a local Hugging Face folder or .gguf file, "
              "or any TransformerLens name")

def param(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
          flags: tuple[str, ...] = (), choices: tuple | None = None, low: float | int | None = None,
          high: float | int | None = None) -> Any:
    """A config field with its help text; `flags` are extra option names (e.g. `--seed`), `choices` the
    allowed values, `low` / `high` inclusive bounds of a number (or of every number of a list), checked by
    `StudyConfig.check` before any work. Mutable defaults go through `factory`."""
    metadata = {"help": help, "flags": flags, "choices": choices, "low": low, "high": high}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class StudyConfig:
    """Base of every study's configuration. Subclasses are dataclasses and set `presets`."""

    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"paper": {}}

    @classmethod
    def preset(cls, name: str, **overrides: Any):
        """The preset's configuration with `overrides` (those that are None are ignored)."""
        if name not in cls.presets:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(cls.presets)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        return cls(**{**cls.presets[name], **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Every field against its declared choices and bounds: a bad value fails here, before data or a model
        are loaded, with the flag's name."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            values = value if isinstance(value, (list, tuple)) else [value]
            flag = f"--{f.name.replace('_', '-')}"
            for v in values:
                if v is None:
                    continue
                if meta.get("choices") and v not in meta["choices"]:
                    raise ValueError(f"{flag} must be one of {list(meta['choices'])}, got {v!r}")
                if meta.get("low") is not None and v < meta["low"]:
                    raise ValueError(f"{flag} must be >= {meta['low']}, got {v!r}")
                if meta.get("high") is not None and v > meta["high"]:
                    raise ValueError(f"{flag} must be <= {meta['high']}, got {v!r}")

    def check_model(self, model: Any) -> None:
        """The values that depend on the model (layers, site; subclasses add theirs), checked once it has loaded
        and before anything is written."""
        from lensneurons.core.sites import check_layers, site_width

        if getattr(self, "layers", None) is not None:
            try:
                check_layers(model, self.layers)
            except (TypeError, ValueError) as err:
                raise ValueError(f"--layers: {err}") from None
        if getattr(self, "site", None) is not None:
            try:
                site_width(model, self.site)
            except ValueError as err:
                raise ValueError(f"--site: {err}") from None


# ---------------------------------------------------------------------------------------------- CLI


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) of `X`, `Optional[X]` or `X | None`."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return tp, False


def _flag_options(f: dataclasses.Field, tp: Any, default: Any) -> dict[str, Any]:
    inner, _ = _unwrap(tp)
    shown = default if default is not None else "none"
    help_text = f.metadata.get("help", "")
    # argparse %-formats help strings: a literal "1%" would print the whole option's repr
    help_line = f"{help_text} (default: {shown})".strip().replace("%", "%%")
    options: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": f.name, "help": help_line}
    if f.metadata.get("choices"):
        options["choices"] = f.metadata["choices"]
    if inner is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(inner) in (list, tuple):
        (item,) = typing.get_args(inner)[:1]
        options.update(nargs="*", type=item, metavar=item.__name__.upper())
    elif inner in (int, float, str):
        options["type"] = inner
        if "choices" not in options:  # argparse lists the choices in place of a metavar
            options["metavar"] = inner.__name__.upper()
    else:
        raise TypeError(f"config field {f.name!r} has a type the command line cannot parse: {tp}")
    return options


def add_config_arguments(parser: argparse.ArgumentParser, config: type[StudyConfig]) -> None:
    """One flag per field of `config`; an unset flag keeps the preset's value."""
    hints = typing.get_type_hints(config)
    defaults = config.preset(next(iter(config.presets)))
    for f in dataclasses.fields(config):
        names = [f"--{f.name.replace('_', '-')}", *f.metadata.get("flags", ())]
        parser.add_argument(*names, **_flag_options(f, hints[f.name], getattr(defaults, f.name)))


@dataclass(frozen=True)
class Study:
    """A study as the command line sees it: name, configuration, data loading, run and report."""

    name: str
    summary: str
    config: type[StudyConfig]
    run: Callable[..., dict]  # run(model, cfg, out, data=..., progress=...) -> result
    prepare: Callable[[Any], Any] | None = None  # cfg -> data, before the model loads
    report: Callable[[dict], str] | None = None  # result -> text printed at the end
    data_keyword: str = "data"  # the keyword of `run` that takes the prepared data

    def configure(self, preset: str | None = None, **overrides: Any) -> StudyConfig:
        return self.config.preset(preset or next(iter(self.config.presets)), **overrides)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        if len(self.config.presets) > 1:
            parser.add_argument("--preset", default=next(iter(self.config.presets)),
                                choices=list(self.config.presets),
                                help="named sizes; flags given change the preset's values (default: %(default)s)")
        add_config_arguments(parser, self.config)
        parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
        parser.add_argument("--backend", default="hooked", choices=["hooked", "bridge"],
                            help="HookedTransformer, or TransformerLens 3's TransformerBridge (default: %(default)s)")
        parser.add_argument("--out", required=True, help="results folder (a rerun with the same configuration resumes)")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")

    def config_from_args(self, args: argparse.Namespace) -> StudyConfig:
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(self.config) if hasattr(args, f.name)}
        return self.configure(getattr(args, "preset", None), **given)

    def main(self, args: argparse.Namespace) -> dict:
        from lensneurons.core.models import load_model, resolve_device

        cfg = self.config_from_args(args)
        cfg.check()
        device = resolve_device(args.device)
        check_writable(args.out)
        started = time.time()
        data = self.prepare(cfg) if self.prepare is not None else None
        model = load_model(cfg.model, device=device, backend=getattr(args, "backend", "hooked"))
        kwargs = {self.data_keyword: data} if data is not None else {}
        result = self.run(model, cfg, args.out, progress=not args.quiet, **kwargs)
        if self.report is not None:
            print(self.report(result))
        print(f"\nResults, tables and figures are in {result['out']}/ ({time.time() - started:.0f} s)")
        return result


def check_writable(out: str | os.PathLike) -> None:
    """Refuse a results folder that is a file or lies where nothing can be written, before any work."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot create or write to it ({existing} is not writable)")
