"""S3D video features from the command line.

    python main.py feature_type=s3d video_paths="[./sample/sample.mp4]" show_pred=true
    python main.py --help      # every option, its default and meaning (utils/config.py)

A thin shell: Hydra composes the typed config, ``utils.run.cli`` runs the batch with the
extractor ``models.build_extractor`` makes for it.
"""
import os
import sys

import hydra
from omegaconf import DictConfig

from models import build_extractor
from utils.run.cli import preflight_or_exit, run_from_hydra
from utils.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> int:
    status = run_from_hydra(cfg, build_extractor)
    if status:
        sys.exit(status)
    return status


if __name__ == "__main__":
    # Launchers such as submitit run each job in a fresh interpreter, which imports utils/ and
    # models/ while unpickling the job: keep this checkout importable there, whatever the cwd.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.abspath(__file__)), os.environ.get("PYTHONPATH")) if p)
    preflight_or_exit(sys.argv[1:])
    main()
