"""``python -m wtal_jax`` is the ``wtal-jax`` command."""

from wtal_jax.cli import main

if __name__ == '__main__':
    raise SystemExit(main())
