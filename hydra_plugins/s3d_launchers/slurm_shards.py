"""The launcher of the SLURM presets (configs/hydra/launcher/slurm.yaml, slurm_cpu.yaml).

Hydra takes launchers only from the ``hydra_plugins`` package, so the class lives here; what
it adds to hydra-submitit-launcher's ``SlurmLauncher`` is in ``utils.run.launchers``.  Without
the plugin installed (no ``cluster`` extra) this module defines nothing, so Hydra's plugin
scan stays quiet.
"""
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

from utils.errors import launcher_exceptions
from utils.run.launchers import LauncherFailed, check_fits, collect_results, sinfo_nodes, task_request

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # a base install: no launcher to extend
    SlurmLauncher = None


if SlurmLauncher is not None:
    class SlurmShards(SlurmLauncher):
        """The plugin's SLURM launcher, checked before and reported after (the module's doc)."""

        def launch(self, job_overrides: Sequence[Sequence[str]],
                   initial_job_idx: int) -> Sequence[JobReturn]:
            """Check, submit, wait for every task; a failure ends the command with its lines
            on stderr and exit status 1 (not Hydra's report, which adds a line on tracebacks)."""
            import submitit  # noqa: F401 - loaded here only (launcher_exceptions finds it)

            try:
                nodes = sinfo_nodes()
                if nodes:
                    refusal = check_fits(task_request(self.params), nodes)
                    if refusal:
                        raise LauncherFailed(refusal)
                jobs = self._submit(job_overrides, initial_job_idx)
                output_path = str(self.config.get("output_path", "."))
                return collect_results(jobs, job_overrides,
                                       f"python -m utils.manifests {shlex.quote(output_path)}",
                                       launcher_exceptions(),
                                       debug=bool(self.config.get("debug", False)))
            except LauncherFailed as e:
                print(e, file=sys.stderr, flush=True)
                raise SystemExit(1) from None

        def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
            """The plugin's ``launch`` (hydra-submitit-launcher 1.2) up to the submission: the
            jobs, not yet waited for."""
            import submitit

            params = dict(self.params)
            init = {"folder": params.pop("submitit_folder")}
            if "max_num_timeout" in params:
                init["slurm_max_num_timeout"] = params.pop("max_num_timeout")
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
            base = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                          for k, v in params.items()})
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            job_params = []
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
                job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                                   Singleton.get_state()))
            return executor.map_array(self, *zip(*job_params))
