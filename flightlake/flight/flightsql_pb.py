"""The Flight SQL protobuf messages flightlake speaks, built at import time.

The field numbers follow the Arrow Flight SQL specification (``format/FlightSql.proto``,
package ``arrow.flight.protocol.sql``). There is no protoc here and no vendored generated
code: a ``FileDescriptorProto`` is assembled from the table below and the ``protobuf``
runtime makes the message classes. Only the messages flightlake reads or writes are
declared; unknown fields in a client's message are kept and ignored by the runtime.

On the wire every command, ticket and action body is a ``google.protobuf.Any`` whose
``type_url`` is ``type.googleapis.com/arrow.flight.protocol.sql.<Message>``; ``pack`` and
``unpack`` below do that wrapping. DoPut results (``DoPutUpdateResult``,
``DoPutPreparedStatementResult``) travel as the bare message, as the spec's clients expect.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

PACKAGE = "arrow.flight.protocol.sql"
TYPE_URL_PREFIX = f"type.googleapis.com/{PACKAGE}."

_F = descriptor_pb2.FieldDescriptorProto
STRING, BYTES, BOOL = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_BOOL
INT32, INT64, UINT32 = _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32
OPTIONAL, REPEATED = "optional", "repeated"

# message name -> [(field name, number, type, "" | "optional" | "repeated" [, type name])]
# The type name is given for message and enum fields (relative to the package).
_MESSAGES: dict[str, list[tuple[Any, ...]]] = {
    # -- metadata commands --------------------------------------------------------------
    "CommandGetSqlInfo": [("info", 1, UINT32, REPEATED)],
    "CommandGetXdbcTypeInfo": [("data_type", 1, INT32, OPTIONAL)],
    "CommandGetCatalogs": [],
    "CommandGetDbSchemas": [
        ("catalog", 1, STRING, OPTIONAL),
        ("db_schema_filter_pattern", 2, STRING, OPTIONAL),
    ],
    "CommandGetTables": [
        ("catalog", 1, STRING, OPTIONAL),
        ("db_schema_filter_pattern", 2, STRING, OPTIONAL),
        ("table_name_filter_pattern", 3, STRING, OPTIONAL),
        ("table_types", 4, STRING, REPEATED),
        ("include_schema", 5, BOOL, ""),
    ],
    "CommandGetTableTypes": [],
    "CommandGetPrimaryKeys": [
        ("catalog", 1, STRING, OPTIONAL),
        ("db_schema", 2, STRING, OPTIONAL),
        ("table", 3, STRING, ""),
    ],
    "CommandGetExportedKeys": [
        ("catalog", 1, STRING, OPTIONAL),
        ("db_schema", 2, STRING, OPTIONAL),
        ("table", 3, STRING, ""),
    ],
    "CommandGetImportedKeys": [
        ("catalog", 1, STRING, OPTIONAL),
        ("db_schema", 2, STRING, OPTIONAL),
        ("table", 3, STRING, ""),
    ],
    "CommandGetCrossReference": [
        ("pk_catalog", 1, STRING, OPTIONAL),
        ("pk_db_schema", 2, STRING, OPTIONAL),
        ("pk_table", 3, STRING, ""),
        ("fk_catalog", 4, STRING, OPTIONAL),
        ("fk_db_schema", 5, STRING, OPTIONAL),
        ("fk_table", 6, STRING, ""),
    ],
    # -- queries --------------------------------------------------------------------------
    "CommandStatementQuery": [
        ("query", 1, STRING, ""),
        ("transaction_id", 2, BYTES, OPTIONAL),
    ],
    "TicketStatementQuery": [("statement_handle", 1, BYTES, "")],
    "CommandPreparedStatementQuery": [("prepared_statement_handle", 1, BYTES, "")],
    # -- writes (refused, except bulk ingest) -----------------------------------------------
    "CommandStatementUpdate": [
        ("query", 1, STRING, ""),
        ("transaction_id", 2, BYTES, OPTIONAL),
    ],
    "CommandPreparedStatementUpdate": [("prepared_statement_handle", 1, BYTES, "")],
    "CommandStatementSubstraitPlan": [],  # plan (1) and transaction_id (2) are never read
    "CommandStatementIngest": [
        (
            "table_definition_options",
            1,
            "message",
            "",
            "CommandStatementIngest.TableDefinitionOptions",
        ),
        ("table", 2, STRING, ""),
        ("schema", 3, STRING, OPTIONAL),
        ("catalog", 4, STRING, OPTIONAL),
        ("temporary", 5, BOOL, ""),
        ("transaction_id", 6, BYTES, OPTIONAL),
        ("options", 1000, "message", REPEATED, "CommandStatementIngest.OptionsEntry"),
    ],
    "DoPutUpdateResult": [("record_count", 1, INT64, "")],
    "DoPutPreparedStatementResult": [("prepared_statement_handle", 1, BYTES, OPTIONAL)],
    # -- actions ----------------------------------------------------------------------------
    "ActionCreatePreparedStatementRequest": [
        ("query", 1, STRING, ""),
        ("transaction_id", 2, BYTES, OPTIONAL),
    ],
    "ActionCreatePreparedStatementResult": [
        ("prepared_statement_handle", 1, BYTES, ""),
        ("dataset_schema", 2, BYTES, ""),
        ("parameter_schema", 3, BYTES, ""),
        ("is_update", 4, BOOL, OPTIONAL),
    ],
    "ActionClosePreparedStatementRequest": [("prepared_statement_handle", 1, BYTES, "")],
}

# Nested types of CommandStatementIngest.
_TABLE_NOT_EXIST = {
    "TABLE_NOT_EXIST_OPTION_UNSPECIFIED": 0,
    "TABLE_NOT_EXIST_OPTION_CREATE": 1,
    "TABLE_NOT_EXIST_OPTION_FAIL": 2,
}
_TABLE_EXISTS = {
    "TABLE_EXISTS_OPTION_UNSPECIFIED": 0,
    "TABLE_EXISTS_OPTION_FAIL": 1,
    "TABLE_EXISTS_OPTION_APPEND": 2,
    "TABLE_EXISTS_OPTION_REPLACE": 3,
}

# CommandStatementIngest.TableDefinitionOptions enum values, by meaning.
IF_NOT_EXIST_CREATE, IF_NOT_EXIST_FAIL = 1, 2
IF_EXISTS_FAIL, IF_EXISTS_APPEND, IF_EXISTS_REPLACE = 1, 2, 3


def _add_fields(msg: descriptor_pb2.DescriptorProto, fields: list[tuple[Any, ...]]) -> None:
    for spec in fields:
        name, number, kind, label = spec[:4]
        field = msg.field.add(name=name, number=number, json_name=_camel(name))
        field.label = _F.LABEL_REPEATED if label == REPEATED else _F.LABEL_OPTIONAL
        if kind == "message":
            field.type = _F.TYPE_MESSAGE
            field.type_name = f".{PACKAGE}.{spec[4]}"
        elif kind == "enum":
            field.type = _F.TYPE_ENUM
            field.type_name = f".{PACKAGE}.{spec[4]}"
        else:
            field.type = kind
        if label == OPTIONAL:  # proto3 `optional`: a synthetic one-field oneof
            field.proto3_optional = True
            field.oneof_index = len(msg.oneof_decl)
            msg.oneof_decl.add(name=f"_{name}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="flightlake/flight_sql.proto", package=PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        msg = proto.message_type.add(name=name)
        _add_fields(msg, fields)
        if name == "CommandStatementIngest":
            options = msg.nested_type.add(name="TableDefinitionOptions")
            for enum_name, values in (
                ("TableNotExistOption", _TABLE_NOT_EXIST),
                ("TableExistsOption", _TABLE_EXISTS),
            ):
                enum = options.enum_type.add(name=enum_name)
                for value_name, number in values.items():
                    enum.value.add(name=value_name, number=number)
            prefix = "CommandStatementIngest.TableDefinitionOptions"
            _add_fields(
                options,
                [
                    ("if_not_exist", 1, "enum", "", f"{prefix}.TableNotExistOption"),
                    ("if_exists", 2, "enum", "", f"{prefix}.TableExistsOption"),
                ],
            )
            entry = msg.nested_type.add(name="OptionsEntry")
            entry.options.map_entry = True
            _add_fields(entry, [("key", 1, STRING, ""), ("value", 2, STRING, "")])
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())

#: Message classes by their short name, e.g. ``MESSAGES["CommandStatementQuery"]``.
MESSAGES: dict[str, type[Message]] = {
    name: message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))
    for name in _MESSAGES
}

CommandGetSqlInfo = MESSAGES["CommandGetSqlInfo"]
CommandGetXdbcTypeInfo = MESSAGES["CommandGetXdbcTypeInfo"]
CommandGetCatalogs = MESSAGES["CommandGetCatalogs"]
CommandGetDbSchemas = MESSAGES["CommandGetDbSchemas"]
CommandGetTables = MESSAGES["CommandGetTables"]
CommandGetTableTypes = MESSAGES["CommandGetTableTypes"]
CommandGetPrimaryKeys = MESSAGES["CommandGetPrimaryKeys"]
CommandGetExportedKeys = MESSAGES["CommandGetExportedKeys"]
CommandGetImportedKeys = MESSAGES["CommandGetImportedKeys"]
CommandGetCrossReference = MESSAGES["CommandGetCrossReference"]
CommandStatementQuery = MESSAGES["CommandStatementQuery"]
TicketStatementQuery = MESSAGES["TicketStatementQuery"]
CommandPreparedStatementQuery = MESSAGES["CommandPreparedStatementQuery"]
CommandStatementUpdate = MESSAGES["CommandStatementUpdate"]
CommandPreparedStatementUpdate = MESSAGES["CommandPreparedStatementUpdate"]
CommandStatementSubstraitPlan = MESSAGES["CommandStatementSubstraitPlan"]
CommandStatementIngest = MESSAGES["CommandStatementIngest"]
DoPutUpdateResult = MESSAGES["DoPutUpdateResult"]
DoPutPreparedStatementResult = MESSAGES["DoPutPreparedStatementResult"]
ActionCreatePreparedStatementRequest = MESSAGES["ActionCreatePreparedStatementRequest"]
ActionCreatePreparedStatementResult = MESSAGES["ActionCreatePreparedStatementResult"]
ActionClosePreparedStatementRequest = MESSAGES["ActionClosePreparedStatementRequest"]


# -- Flight session and cancellation actions (format/Flight.proto, package arrow.flight.protocol)
# These travel as bare messages (no Any) in the action body and result. Enum fields are declared
# as int32 (the same varint on the wire); CancelFlightInfoRequest's FlightInfo is kept as bytes
# (the same length-delimited field), since flightlake never reads it.
FLIGHT_PACKAGE = "arrow.flight.protocol"
CLOSE_SESSION_CLOSED = 1  # CloseSessionResult.Status.CLOSED
CANCEL_STATUS_CANCELLED = 1  # CancelStatus.CANCEL_STATUS_CANCELLED
SESSION_INVALID_NAME, SESSION_INVALID_VALUE, SESSION_ERROR = 1, 2, 3  # SetSessionOptionsResult


def _flight_file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="flightlake/flight_session.proto", package=FLIGHT_PACKAGE, syntax="proto3"
    )

    def field(
        msg: descriptor_pb2.DescriptorProto,
        name: str,
        number: int,
        kind: int,
        *,
        repeated: bool = False,
        type_name: str = "",
        oneof: int | None = None,
    ) -> None:
        f = msg.field.add(name=name, number=number, json_name=_camel(name), type=kind)
        f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
        if type_name:
            f.type_name = f".{FLIGHT_PACKAGE}.{type_name}"
        if oneof is not None:
            f.oneof_index = oneof

    def map_field(msg: descriptor_pb2.DescriptorProto, name: str, value: str) -> None:
        entry_name = _camel(name)[0].upper() + _camel(name)[1:] + "Entry"
        entry = msg.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        field(entry, "key", 1, STRING)
        field(entry, "value", 2, _F.TYPE_MESSAGE, type_name=value)
        field(msg, name, 1, _F.TYPE_MESSAGE, repeated=True, type_name=f"{msg.name}.{entry_name}")

    value = proto.message_type.add(name="SessionOptionValue")
    strings = value.nested_type.add(name="StringListValue")
    field(strings, "values", 1, STRING, repeated=True)
    value.oneof_decl.add(name="option_value")
    field(value, "string_value", 1, STRING, oneof=0)
    field(value, "bool_value", 2, BOOL, oneof=0)
    field(value, "int64_value", 3, _F.TYPE_SFIXED64, oneof=0)
    field(value, "double_value", 4, _F.TYPE_DOUBLE, oneof=0)
    field(
        value,
        "string_list_value",
        5,
        _F.TYPE_MESSAGE,
        type_name="SessionOptionValue.StringListValue",
        oneof=0,
    )
    map_field(
        proto.message_type.add(name="SetSessionOptionsRequest"),
        "session_options",
        "SessionOptionValue",
    )
    result = proto.message_type.add(name="SetSessionOptionsResult")
    error = result.nested_type.add(name="Error")
    field(error, "value", 1, INT32)
    map_field(result, "errors", "SetSessionOptionsResult.Error")
    proto.message_type.add(name="GetSessionOptionsRequest")
    map_field(
        proto.message_type.add(name="GetSessionOptionsResult"),
        "session_options",
        "SessionOptionValue",
    )
    proto.message_type.add(name="CloseSessionRequest")
    field(proto.message_type.add(name="CloseSessionResult"), "status", 1, INT32)
    field(proto.message_type.add(name="CancelFlightInfoRequest"), "info", 1, BYTES)
    field(proto.message_type.add(name="CancelFlightInfoResult"), "status", 1, INT32)
    return proto


_POOL.Add(_flight_file())


def _flight_message(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{FLIGHT_PACKAGE}.{name}"))


SessionOptionValue = _flight_message("SessionOptionValue")
SetSessionOptionsRequest = _flight_message("SetSessionOptionsRequest")
SetSessionOptionsResult = _flight_message("SetSessionOptionsResult")
GetSessionOptionsRequest = _flight_message("GetSessionOptionsRequest")
GetSessionOptionsResult = _flight_message("GetSessionOptionsResult")
CloseSessionRequest = _flight_message("CloseSessionRequest")
CloseSessionResult = _flight_message("CloseSessionResult")
CancelFlightInfoRequest = _flight_message("CancelFlightInfoRequest")
CancelFlightInfoResult = _flight_message("CancelFlightInfoResult")


def pack(message: Message) -> bytes:
    """``message`` wrapped in a serialized ``google.protobuf.Any``."""
    wrapper = any_pb2.Any(
        type_url=TYPE_URL_PREFIX + message.DESCRIPTOR.name, value=message.SerializeToString()
    )
    return bytes(wrapper.SerializeToString())


def unpack(raw: bytes) -> tuple[str, Message | None] | None:
    """``(name, message)`` for a serialized Flight SQL ``Any``, or None if ``raw`` is not one.

    None means "not Flight SQL" (plain SQL text, JSON, an Any of another package); a cheap
    prefix check comes first so plain Flight requests are not parsed twice. ``message`` is
    None for a Flight SQL message this module does not declare (the caller refuses it by
    name). A malformed payload raises ``DecodeError``.
    """
    if not raw or raw[0] != 0x0A:  # an Any starts with field 1 (type_url), length-delimited
        return None
    wrapper = any_pb2.Any()
    try:
        wrapper.ParseFromString(raw)
    except (DecodeError, ValueError):
        return None
    if not wrapper.type_url.startswith(TYPE_URL_PREFIX):
        return None
    name = wrapper.type_url[len(TYPE_URL_PREFIX) :]
    cls = MESSAGES.get(name)
    return name, (cls.FromString(wrapper.value) if cls is not None else None)
