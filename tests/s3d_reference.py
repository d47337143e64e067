"""The map from our (kylemin/S3D) state-dict keys to torchvision's ``S3D``, an independent
implementation of the same network."""
import re


def to_torchvision_key(key: str) -> str:
    """Map a kylemin/S3D state-dict key to torchvision's ``S3D`` key."""
    key = re.sub(r"^base\.", "features.", key)
    key = re.sub(r"^fc\.0\.", "classifier.1.", key)
    key = re.sub(r"\.branch0\.0\.conv\.", ".branch0.0.", key)  # torchvision: no Sequential
    key = re.sub(r"\.branch0\.0\.bn\.", ".branch0.1.", key)    # around branch0
    key = re.sub(r"\.conv_s\.", ".0.0.", key)
    key = re.sub(r"\.bn_s\.", ".0.1.", key)
    key = re.sub(r"\.conv_t\.", ".1.0.", key)
    key = re.sub(r"\.bn_t\.", ".1.1.", key)
    key = re.sub(r"\.conv\.", ".0.", key)
    key = re.sub(r"\.bn\.", ".1.", key)
    return key
