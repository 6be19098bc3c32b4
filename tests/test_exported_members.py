"""The public API: ``statebus.__all__`` is sorted, complete and every name resolves."""

import statebus


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert statebus.__all__ == sorted(statebus.__all__)
    for name in statebus.__all__:
        assert getattr(statebus, name) is not None, name


def test_every_error_class_is_exported() -> None:
    import statebus.errors as errors

    public_errors = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.StatebusError) and not name.startswith("_")
    }
    missing = public_errors - set(statebus.__all__)
    # errors a user handles are exported; the rest stay reachable as statebus.errors.<Name>
    assert missing <= {"CliError", "PeerUnavailable", "SandboxViolation"}, missing


def test_unknown_name_raises_attribute_error() -> None:
    try:
        statebus.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_core_does_not_start_the_world() -> None:
    import subprocess
    import sys

    code = (
        "import sys, statebus.keys, statebus.bus; print('asyncio' in sys.modules, 'starlette' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
