"""Names and defaults that several rooms show: the tracker, the node's parameters, the bag
replay and the command line. Each is stated here once and imported where it is used.

They live in this module, which imports nothing heavy, because the ``lightglue-ros`` parser shows
them and must build without torch, rclpy, numpy or OpenCV (``--help`` answers at once). A
default that only one module uses stays in that module (the networks' own ``default_conf``,
``geometry``'s pose settings, the node's other parameters in ``ros/params.py``).
"""
from __future__ import annotations

from lightglue_ros.errors import ConfigError

# -- the networks --------------------------------------------------------------------------
EXTRACTORS = ('superpoint', 'disk', 'aliked', 'xfeat')
DEFAULT_EXTRACTOR = 'superpoint'
DEFAULT_MAX_KEYPOINTS = 1024  # strongest keypoints kept per frame, every extractor
# At most this many keypoints a frame: LightGlue's attention holds heads x N^2 scores (about
# 4 GB in fp32 at 16384), more than a robot's GPU or CPU has to spare.
MAX_KEYPOINTS_LIMIT = 16384
DEFAULT_RESIZE = 1024  # longer image side the extractor sees, downscale only (None = native)
# cuda_graphs: the matcher's static-shape path replayed from CUDA graphs (cuda_graphs.py);
# auto = on for a CUDA device, off (the dynamic eager matcher) elsewhere.
CUDA_GRAPHS_MODES = ('auto', 'on', 'off')
DEFAULT_CUDA_GRAPHS = 'auto'
# static_early_exit: how the static path stops after LightGlue's early exit: mask = one graph,
# the layers after the exit run masked (no host read); skip = a graph per layer, the host
# reads each layer's exit flag and launches no more layers (cuda_graphs.GraphedMatcher).
STATIC_EARLY_EXIT_MODES = ('mask', 'skip')
DEFAULT_STATIC_EARLY_EXIT = 'mask'
# torch_compile: the static path's fixed-shape functions compiled by torch.compile (inductor),
# cached on disk; off = as they are (compiled.py). Applies where the static path runs.
TORCH_COMPILE_MODES = ('off', 'on')
DEFAULT_TORCH_COMPILE = 'off'

# -- the node and the replay -----------------------------------------------------------------
NODE_NAME = 'lightglue_matcher'
DEFAULT_ODOM_FRAME = 'odom'  # frame_id of ~/odometry
DEFAULT_BACKWARDS_RESET_FRAMES = 3  # consecutive images back in time that restart the tracker
# Decode and extract the next frame on one thread while another tracks the current one.
DEFAULT_PIPELINED = True
DEFAULT_THREADS_PER_STAGE = 0  # torch intra-op threads of each stage; 0: the cores / stages
FEATURES_LAYOUTS = ('vins_mono', 'vins_fusion')  # channel layouts of ~/features
DEFAULT_FEATURES_LAYOUT = 'vins_mono'
DEFAULT_FEATURES_INLIERS_ONLY = True  # ~/features carries the pose inliers only

# -- the replay's outputs --------------------------------------------------------------------
STORAGES = ('mcap', 'sqlite3')  # rosbag2 storage plugins the output bag can use
SUMMARY_NAME = 'replay_summary.json'  # written inside the output bag folder by default
PLOTS_NAME = 'plots'
DEBUG_IMAGE_TOPIC = 'debug_image'  # relative name, as the node's ~/debug_image
DEFAULT_TOPIC_PREFIX = f'/{NODE_NAME}'  # output topic = prefix/name, as the node's ~/name


def check_max_keypoints(value: object, *, allow_all: bool) -> None:
    """Raise ConfigError unless ``value`` is a keypoint budget: an int in
    [1, MAX_KEYPOINTS_LIMIT], or (``allow_all``: a network used on its own) None or -1 for
    every keypoint. The one check of max_keypoints, wherever it arrives from."""
    if allow_all and (value is None or value == -1):
        return
    if type(value) is not int or not 1 <= value <= MAX_KEYPOINTS_LIMIT:
        every = 'None, -1 or ' if allow_all else ''
        raise ConfigError(f'max_keypoints must be {every}an int in [1, {MAX_KEYPOINTS_LIMIT}], '
                         f'got {value!r}')
