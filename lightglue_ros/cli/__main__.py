"""``python -m lightglue_ros.cli``: the ``lightglue-ros`` command in its own process."""
from lightglue_ros.cli import script

if __name__ == '__main__':
    script()
