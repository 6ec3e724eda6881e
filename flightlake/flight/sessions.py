"""Flight's session actions, answered for a server that keeps no session state.

``SetSessionOptions``, ``GetSessionOptions``, ``CloseSession`` and ``CancelFlightInfo``
(``format/Flight.proto``): the request and the result travel as bare protobuf messages (no
``Any``) in the action body and result, built by ``flightsql_pb``. flightlake has one catalog
and one schema, so the only session options are those two, fixed. ADBC reads them for
``adbc_current_catalog`` / ``adbc_current_db_schema`` and sends ``CloseSession`` when a
connection closes; the Flight SQL JDBC driver sends ``SetSessionOptions`` for ``catalog=``.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError, Message

from flightlake.errors import InvalidInput
from flightlake.flight import flightsql_pb as pb
from flightlake.flight.flightsql_meta import CATALOG, DB_SCHEMA

#: Session options a client may set, and the only value each takes.
SESSION_OPTIONS = {"catalog": CATALOG, "schema": DB_SCHEMA}


def _parse(cls: type[Message], body: bytes) -> Message:
    try:
        return cls.FromString(body)
    except DecodeError as exc:
        raise InvalidInput(f"malformed {cls.DESCRIPTOR.name}: {exc}") from exc


def _session_value(value: str) -> Message:
    return pb.SessionOptionValue(string_value=value)


def _set_session_options(body: bytes) -> bytes:
    """Accept catalog ``flightlake`` and schema ``main`` (the only ones there are); any other
    name or value comes back as a per-option error, as the spec's result message says."""
    request = _parse(pb.SetSessionOptionsRequest, body)
    result = pb.SetSessionOptionsResult()
    for name, value in request.session_options.items():
        wanted = SESSION_OPTIONS.get(name)
        if wanted is None:
            result.errors[name].value = pb.SESSION_INVALID_NAME
        elif value.WhichOneof("option_value") is None:
            continue  # "unset": the default is the only value anyway
        elif value.WhichOneof("option_value") != "string_value" or value.string_value != wanted:
            result.errors[name].value = pb.SESSION_INVALID_VALUE
    return bytes(result.SerializeToString())


def _get_session_options(body: bytes) -> bytes:
    _parse(pb.GetSessionOptionsRequest, body)
    result = pb.GetSessionOptionsResult()
    for name, value in SESSION_OPTIONS.items():
        result.session_options[name].CopyFrom(_session_value(value))
    return bytes(result.SerializeToString())


def _close_session(body: bytes) -> bytes:
    _parse(pb.CloseSessionRequest, body)
    return bytes(pb.CloseSessionResult(status=pb.CLOSE_SESSION_CLOSED).SerializeToString())


def _cancel_flight_info(body: bytes) -> bytes:
    """CANCELLED: a FlightInfo's query only runs when its ticket is redeemed (DoGet), and a
    running DoGet stops when the client closes the stream."""
    _parse(pb.CancelFlightInfoRequest, body)
    result = pb.CancelFlightInfoResult(status=pb.CANCEL_STATUS_CANCELLED)
    return bytes(result.SerializeToString())


#: action type -> handler of the serialized request, answering the serialized result
SESSION_ACTIONS: dict[str, Callable[[bytes], bytes]] = {
    "SetSessionOptions": _set_session_options,
    "GetSessionOptions": _get_session_options,
    "CloseSession": _close_session,
    "CancelFlightInfo": _cancel_flight_info,
}
