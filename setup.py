"""Install lightglue_ros with colcon (ament_python) or pip (`pip install -e .[ros,test]`)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'lightglue_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    description='Fast learned feature tracking (SuperPoint/DISK/ALIKED + LightGlue) for ROS 2',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(exclude=['tests', 'tests.*', 'benchmarks']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml')),
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
            'ros-kilted-sensor-msgs',
            'ros-kilted-geometry-msgs',
            'ros-kilted-std-msgs',
            'ros-kilted-nav-msgs',
            'ros-kilted-diagnostic-msgs',
            'ros-kilted-visualization-msgs',
        ],
        'extractors': ['kornia>=0.8'],
        'pose': ['poselib>=2.0'],
        'test': ['pytest>=7', 'transformers>=4.50', 'kornia>=0.8', 'poselib>=2.0'],
    },
    zip_safe=True,
    maintainer='lightglue_ros maintainers',
    maintainer_email='maintainers@lightglue-ros.dev',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'matcher_node = lightglue_ros.ros.node:main',
            'replay = lightglue_ros.cli:replay_main',
            'lightglue-ros = lightglue_ros.cli:main',
        ],
    },
)
