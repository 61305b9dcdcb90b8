"""Install lightglue_ros with colcon (ament_python) or pip (`pip install -e .[ros,test]`)."""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = 'lightglue_ros'
# The fleet extra's Ray, pinned: the version its tests ran with (installs on Python 3.11).
RAY = 'ray==2.60.0'
# colcon --symlink-install runs this file from the build folder through a symlink: read and
# glob relative to the source folder, never the current directory.
HERE = Path(__file__).resolve().parent

setup(
    name=PACKAGE,
    version='0.1.0',
    description='Fast learned feature tracking (SuperPoint/DISK/ALIKED + LightGlue) for ROS 2',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    # devtools/ (reference models for tests and benchmarks) is development tooling only.
    packages=find_packages(exclude=['tests', 'tests.*', 'benchmarks', 'devtools', 'devtools.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', sorted(glob('launch/*.launch.py', root_dir=HERE))),
        (f'share/{PACKAGE}/config', sorted(glob('config/*.yaml', root_dir=HERE)
                                           + glob('config/*.xml', root_dir=HERE))),
    ],
    package_data={PACKAGE: ['py.typed']},
    install_requires=[
        'numpy>=1.24',
        'opencv-python-headless>=4.8',
        'pyyaml>=6',
        'torch>=2.4,<=2.14.1',
        'tqdm>=4.60',
        'matplotlib>=3.7',
        'rosbags>=0.10',
    ],
    extras_require={
        # ROS 2 Kilted from PyPI, for machines without a system ROS install (colcon users skip it).
        'ros': [
            'ros-kilted-rclpy',
            'ros-kilted-rmw-fastrtps-cpp',
            'ros-kilted-rcl-interfaces',
            'ros-kilted-builtin-interfaces',
            'ros-kilted-sensor-msgs',
            'ros-kilted-geometry-msgs',
            'ros-kilted-std-msgs',
            'ros-kilted-nav-msgs',
            'ros-kilted-diagnostic-msgs',
        ],
        'extractors': ['kornia>=0.8'],
        # lightglue-ros replay --ray: a fleet of bags on a Ray cluster (docs/replay.md).
        'fleet': [RAY],
        'pose': ['poselib>=2.0'],
        'test': [
            'pytest>=7', 'transformers>=4.50', 'kornia>=0.8', 'poselib>=2.0',
            RAY,  # tests/test_fleet.py runs a fleet on Ray's local cluster
            # colcon build / colcon test of the package (tests/test_colcon.py)
            'colcon-core', 'colcon-ros', 'colcon-python-setup-py', 'ros-kilted-ament-package',
            # what the launch / launch_ros sources in ../shared/ros2_launch import
            # (tests/test_launch.py); their `lark` is lark-parser, which rclpy already brings
            # (rosidl-parser): the `lark` distribution would overwrite the same module.
            'osrf-pycommon', 'ros-kilted-lifecycle-msgs', 'ros-kilted-ament-index-python',
        ],
    },
    zip_safe=True,
    maintainer='lightglue_ros maintainers',
    maintainer_email='maintainers@lightglue-ros.dev',
    entry_points={
        'console_scripts': [
            'matcher_node = lightglue_ros.ros.node:main',
            'replay = lightglue_ros.cli:replay_script',
            'lightglue-ros = lightglue_ros.cli:script',
        ],
    },
)
