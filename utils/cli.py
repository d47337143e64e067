"""The command line around the batch run: one-line config errors, logging, exit status."""
import logging
import os
import sys
from typing import List, Optional

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from models.s3d.weights import WeightsError
from utils.video_paths import InputError

log = logging.getLogger("s3d")
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CONFIG_NAME = "config"


class RunFailed(CompactHydraException):
    """Raised in multirun jobs, where Hydra turns it into a failed job and exit status 1.

    A ``CompactHydraException``: Hydra prints the job's overrides and this one line, not a
    traceback (``debug=true`` still logs the tracebacks of the failures themselves).
    """


def setup_logging(debug: bool = False) -> None:
    class Formatter(logging.Formatter):
        def format(self, record):
            msg = super().format(record)
            return f"WARNING: {msg}" if record.levelno == logging.WARNING else msg

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("libav", "PIL", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def config_error_line(exc: BaseException) -> str:
    """One line naming the option and what is allowed, from Hydra's / OmegaConf's errors."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException):
        group = "feature_type" if "feature_type" in str(exc) else None
        options = ", ".join(exc.options or []) if getattr(exc, "options", None) else ""
        if group:
            bad = str(exc).split("feature_type/", 1)[-1].split("'")[0]
            return f"feature_type: {bad!r} is not available; expected one of [{options}]"
        return _first_line(exc)
    cause = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        if isinstance(cause, ValueError) and ":" in str(cause):
            return _first_line(cause)
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        msg = getattr(cause, "msg", None) or _first_line(cause)
        msg = _first_line(msg)
        if "not in" in msg and key:
            return f"{key}: unknown option (see README for the options)"
        return f"{key}: {msg}" if key else msg
    return _first_line(exc)


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
    """Validate a plain run's overrides up front; flags (``-m``, ``--cfg``...) go to Hydra as is."""
    if any(a.startswith("-") for a in argv):
        return
    error = preflight(argv)
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def run_from_hydra(cfg: DictConfig) -> int:
    """The body of ``main``: returns the exit status (0 only if no video failed)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from utils.batch_run import run

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    setup_logging(bool(cfg.get("debug", False)))
    try:
        conf = OmegaConf.to_object(cfg)
        report = run(conf)
    except (ValueError, WeightsError, InputError, OmegaConfBaseException) as e:
        log.debug("traceback (debug=true)", exc_info=True)
        message = config_error_line(e) if isinstance(e, OmegaConfBaseException) else _first_line(e)
        if multirun:
            raise RunFailed(message) from None
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log.debug("traceback (debug=true)", exc_info=True)
        log.error("interrupted: every output written so far is complete; rerun the same "
                  "command to resume")
        return 130
    if report.num_failed:
        if multirun:
            where = f"; listed in {report.failed_file}" if report.failed_file else ""
            raise RunFailed(f"{report.num_failed} video(s) failed{where}")
        return 1
    return 0
