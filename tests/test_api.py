from __future__ import annotations

import inspect
import types

import lmdbstate
from lmdbstate import errors


def test_all_is_sorted_and_names_every_public_attribute() -> None:
    public = {
        name
        for name, value in vars(lmdbstate).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert lmdbstate.__all__ == sorted(lmdbstate.__all__)
    assert set(lmdbstate.__all__) == public | {"__version__"}


def test_every_error_is_exported_documented_and_hinted() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, errors.LmdbStateError)
    ]
    assert len(classes) > 10
    for cls in classes:
        assert cls.__name__ in lmdbstate.__all__, cls
        assert cls.__doc__, cls
        assert cls.__doc__.strip(), cls
        assert cls.__name__ in errors.__doc__, f"{cls.__name__} missing from the drawn tree"
        if cls not in (errors.LmdbStateError, errors.NotFoundError, errors.StoreError):
            assert cls.hint or cls is errors.InvalidStatusError, f"{cls.__name__} has no hint"


def test_lookup_and_value_errors_subclass_the_builtins() -> None:
    assert issubclass(lmdbstate.WorkflowNotFoundError, LookupError)
    assert issubclass(lmdbstate.CheckpointNotFoundError, LookupError)
    assert issubclass(lmdbstate.InvalidWorkflowIdError, ValueError)
    assert issubclass(lmdbstate.CodecError, ValueError)


def test_version_is_the_installed_one() -> None:
    from importlib.metadata import version

    assert lmdbstate.__version__ == version("lmdbstate")


def test_importing_lmdbstate_does_not_import_the_cli() -> None:
    import subprocess
    import sys

    code = "import sys, lmdbstate; print('lmdbstate.cli' in sys.modules, 'typer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
