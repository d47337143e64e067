"""The command line around the batch run: one-line config errors, ``--help``, exit status.

``main.py`` hands ``run_from_hydra`` the factory that builds the extractor for a config, so
this side never imports the networks.
"""
import logging
import os
import sys
from typing import Callable, List, Optional

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from utils.run.batch_run import Extractor
from utils.config import ExtractionConfig
from utils.console import setup_logging
from utils.errors import InputError, WeightsError, one_line
from utils.run.stopping import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated

log = logging.getLogger("s3d")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")
CONFIG_NAME = "config"
HELP_FLAGS = ("--help", "-h")


class RunFailed(CompactHydraException):
    """Raised in multirun jobs, where Hydra turns it into a failed job and exit status 1.

    A ``CompactHydraException``: Hydra prints the job's overrides and this one line, not a
    traceback (``debug=true`` still logs the tracebacks of the failures themselves).
    """


def config_error_line(exc: BaseException) -> str:
    """One line naming the option and what is allowed, from Hydra's / OmegaConf's errors."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException):
        options = ", ".join(exc.options or []) if getattr(exc, "options", None) else ""
        if "feature_type" in str(exc):
            bad = str(exc).split("feature_type/", 1)[-1].split("'")[0]
            return f"feature_type: {bad!r} is not available; expected one of [{options}]"
        return one_line(exc)
    cause = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        if isinstance(cause, ValueError) and ":" in str(cause):
            return one_line(cause)
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        msg = one_line(getattr(cause, "msg", None) or cause)
        if "not in" in msg and key:
            return f"{key}: unknown option (see python main.py --help)"
        return f"{key}: {msg}" if key else msg
    return one_line(exc)


def compose_config(overrides: List[str], return_hydra_config: bool = False) -> DictConfig:
    """The config ``python main.py OVERRIDES`` runs with, composed outside a Hydra run."""
    from hydra import compose, initialize_config_dir
    from utils.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(CONFIG_NAME, overrides=overrides, return_hydra_config=return_hydra_config)


def preflight(overrides: List[str]) -> Optional[str]:
    """Compose the config as Hydra will, so that a bad option fails in one line, not a page."""
    from hydra.errors import HydraException

    try:
        OmegaConf.to_object(compose_config(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        return config_error_line(e)
    return None


def preflight_or_exit(argv: List[str]) -> None:
    """``--help``: the options; otherwise validate a plain run's overrides up front (exit 2 on
    a bad one).  Other flags (``-m``, ``--cfg``, ``--hydra-help``...) go to Hydra as they are."""
    if any(a in HELP_FLAGS for a in argv):
        from utils.config import help_text

        print(help_text())
        sys.exit(0)
    if any(a.startswith("-") for a in argv):
        return
    error = preflight(argv)
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


ExtractorFactory = Callable[[ExtractionConfig], Extractor]


def run_from_hydra(cfg: DictConfig, build_extractor: ExtractorFactory) -> int:
    """The body of ``main``: returns the exit status (0 only if no video failed)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from utils.run.batch_run import run

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    setup_logging(bool(cfg.get("debug", False)))
    try:
        conf = OmegaConf.to_object(cfg)
        report = run(conf, build_extractor)
    except (ValueError, WeightsError, InputError, OmegaConfBaseException) as e:
        log.debug("traceback (debug=true)", exc_info=True)
        message = config_error_line(e) if isinstance(e, OmegaConfBaseException) else one_line(e)
        if multirun:
            raise RunFailed(message) from None
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        log.debug("traceback (debug=true)", exc_info=True)
        how = "terminated" if isinstance(e, Terminated) else "interrupted"
        log.error("%s: every output written so far is complete; rerun the same command to "
                  "resume", how)
        return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED
    if report.num_failed:
        if multirun:
            where = f"; listed in {report.failed_file}" if report.failed_file else ""
            raise RunFailed(f"{report.num_failed} video(s) failed{where}")
        return 1
    return 0
