"""Cloud clusters: the Ray cluster launcher configs the project ships (cluster.yaml and its twins),
checked the way `ray up` reads them and against the training config they are meant to run."""

from recfound.cloud.fit import check_fit
from recfound.cloud.launcher import LauncherError, load_launcher_config, mounted_file_problems

__all__ = ["LauncherError", "check_fit", "load_launcher_config", "mounted_file_problems"]
