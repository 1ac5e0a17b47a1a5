"""Entry points: ``launch/<name>.py`` run as scripts, or installed as the ``turbotrain-<name>`` commands."""
