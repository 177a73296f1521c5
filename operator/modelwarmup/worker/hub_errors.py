"""Map huggingface_hub's exceptions onto modelwarmup's permanent and transient errors (errors.py).

The operator's Job fails fast on a permanent failure (the repository, revision or file does not
exist; the repository is gated and the token has no access; the token is bad) and retries a
transient one (network trouble, 5xx, a checksum mismatch after a broken transfer). Messages name
the repository and revision but never the token.
"""

from __future__ import annotations

from modelwarmup import errors


def translate(error: BaseException, *, repo: str, revision: str) -> errors.ModelWarmupError:
    """The modelwarmup error for a huggingface_hub (or network) exception."""
    import httpx2
    from huggingface_hub import errors as hf

    where = f"{repo}@{revision}"
    if isinstance(error, hf.GatedRepoError):
        return errors.GatedRepository(
            f"{where} is gated and the token has no access (request access on the hub, or set tokenSecretRef)"
        )
    if isinstance(error, hf.RevisionNotFoundError):
        return errors.RevisionNotFound(f"revision {revision!r} not found in {repo}")
    if isinstance(error, hf.RemoteEntryNotFoundError | hf.EntryNotFoundError):
        return errors.FileNotOnHub(f"a file of {where} is not on the hub: {_first_line(error)}")
    if isinstance(error, hf.RepositoryNotFoundError):
        status = _status(error)
        if status == 401 and "invalid" in str(error).lower():
            return errors.BadToken(f"the hub refused the token for {repo} (401 Unauthorized)")
        return errors.RepositoryNotFound(f"repository {repo} not found, or private without a valid token")
    if isinstance(error, hf.HfHubHTTPError):
        status = _status(error)
        if status == 401:
            return errors.BadToken(f"the hub refused the token for {repo} (401 Unauthorized)")
        if status == 403:
            return errors.Forbidden(f"the hub denied access to {where} (403 Forbidden): {_first_line(error)}")
        if status == 404:  # the listing named it, the file server has it not
            return errors.FileNotOnHub(
                f"a file of {where} is listed but not served (404): {_first_line(error)}"
            )
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            return errors.PermanentError(f"the hub answered {status} for {where}: {_first_line(error)}")
        return errors.HubUnavailable(f"the hub answered {status} for {where}; will retry")
    if isinstance(error, httpx2.HTTPError | ConnectionError | TimeoutError | hf.OfflineModeIsEnabled):
        return errors.HubUnavailable(
            f"cannot reach the hub for {where}: {type(error).__name__}: {_first_line(error)}"
        )
    if isinstance(error, hf.LocalEntryNotFoundError):
        return errors.HubUnavailable(f"cannot reach the hub for {where} and the file is not cached")
    raise error


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _first_line(error: BaseException) -> str:
    """The error's first line, without credentials of a URL it quotes (a mirror's userinfo)."""
    return errors.redact_credentials((str(error).strip().splitlines() or [type(error).__name__])[0])[:300]
