"""The layout of sse-flask's Redis stream: its keys, the Lua scripts that write and read it,
and its ids.

Every event is one entry of one Redis stream (:data:`STREAM_KEY`): fields ``c`` (the
channel), ``e`` (the epoch), ``p`` (the id generated just before it) and ``f`` (the frame
without its id); a job's events also go to the job's own stream, and its last one carries
``x``. An event's id is ``<epoch>-<stream id>``: the epoch is a token stored beside the
stream, drawn afresh when Redis has lost it or is not the Redis that wrote it (see
:data:`EPOCH_SCRIPT`), so that an id from a Redis that may since have lost data is
recognised as unknown. :mod:`sse_flask.broker.redis` runs these.
"""

from __future__ import annotations

import re
import typing as t

from ..events import Event, encode_event, prefix_id

STREAM_KEY = "sse_flask:events"
EPOCH_KEY = "sse_flask:epoch"
LAST_KEY = "sse_flask:last"
REPLICATION_KEY = "sse_flask:replid"
STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
MAX_PART = 2**64 - 1  # both parts of a stream id are unsigned 64-bit

# The epoch, made afresh (from ARGV[1]) when Redis has none, or when Redis is not the one
# that wrote it: its replication id differs from the one stored beside it, as after a
# restart or a failover to a replica, either of which may have lost entries it had
# acknowledged (a primary's last writes, not yet replicated nor on disk). Every id from
# before is then unknown, and a resume from it is told ``missed``: Redis cannot vouch for
# what followed. One exception, with ARGV[2] '1' (every publish waits for a replica): a
# replica promoted in a failover (its previous replication id, master_replid2, is the
# writer's) holds every acknowledged entry, and the epoch is kept.
# KEYS[2]: the epoch; KEYS[4]: the replication id that wrote it.
EPOCH_SCRIPT = """
local replication = redis.call('INFO', 'replication')
local replid = string.match(replication, 'master_replid:(%x+)') or ''
local promoted_from = string.match(replication, 'master_replid2:(%x+)') or ''
local epoch = redis.call('GET', KEYS[2])
local writer = redis.call('GET', KEYS[4])
if not epoch or writer ~= replid and not (ARGV[2] == '1' and writer == promoted_from) then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
if writer ~= replid then
  redis.call('SET', KEYS[4], replid)
end
"""

# Get or make the epoch, and append, in one step: no publish can slip between a Redis
# restart and the new epoch. Each entry also records ``p``, the id generated just before it
# (kept in LAST_KEY, replicated with the entry), so that a resume can tell an id this stream
# really issued, with nothing after it gone, from one it never held. A stream that exists
# without LAST_KEY (written by an older version) gets an empty ``p``: a resume from just
# before that entry is then held only within its millisecond (see ``predecessor``), else
# answered with ``missed``, the safe side.
PUBLISH = (
    EPOCH_SCRIPT
    + """
local previous = redis.call('GET', KEYS[3])
if not previous then
  previous = redis.call('EXISTS', KEYS[1]) == 1 and '' or '0-0'
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*',
  'c', ARGV[4], 'e', epoch, 'p', previous, 'f', ARGV[5])
redis.call('SET', KEYS[3], id)
return {epoch, id}
"""
)

# One snapshot for a resume from ARGV[3] (a stream id, or '' for none): the epoch, the last
# id generated, the greatest id deleted, and the entries from ARGV[3] on.
HISTORY = (
    EPOCH_SCRIPT
    + """
local last, deleted, entries = '0-0', '0-0', {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
    if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
  end
  if ARGV[3] ~= '' then entries = redis.call('XRANGE', KEYS[1], ARGV[3], '+') end
end
return {epoch, last, deleted, entries}
"""
)

# A job's event: appended to the stream every worker follows (for live delivery) and, with
# the same id, to the job's own stream, kept until SSE_JOB_RETENTION after the job's last
# event whatever the main stream's trimming. The last one is marked 'x', so that every
# worker ends the job's streams after it; the job's state key says whether it has ended.
# KEYS and ARGV 1 to 5 as for PUBLISH; KEYS[5]: the job's stream, KEYS[6]: its state;
# ARGV[6]: '1' for its last event, ARGV[7]: seconds its keys live on.
PUBLISH_JOB = (
    EPOCH_SCRIPT
    + """
local previous = redis.call('GET', KEYS[3])
if not previous then
  previous = redis.call('EXISTS', KEYS[1]) == 1 and '' or '0-0'
end
local fields = {'c', ARGV[4], 'e', epoch, 'p', previous, 'f', ARGV[5]}
if ARGV[6] == '1' then
  table.insert(fields, 'x')
  table.insert(fields, '1')
  redis.call('SET', KEYS[6], 'ended', 'EX', ARGV[7])
else
  redis.call('EXPIRE', KEYS[6], ARGV[7])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
redis.call('SET', KEYS[3], id)
redis.call('XADD', KEYS[5], id, unpack(fields))
redis.call('EXPIRE', KEYS[5], ARGV[7])
return {epoch, id}
"""
)
#: The keys of a job, after this prefix and its channel: its events, and its state.
JOB_KEY = "sse_flask:job:"
#: Seconds a running job's keys outlive its latest event (a job whose worker died).
RUNNING_JOB_SECONDS = 86400
#: The channel of the main stream's entries that cancel a job (its channel in ``f``); no
#: stream can listen to it, since it is not a valid channel name.
CANCEL = "#cancel"

Position = tuple[int, int]
#: One entry of the stream as redis-py returns it: (stream id, fields).
Entry = tuple[bytes, dict[bytes, bytes]]


def entry_frame(stream_id: bytes, fields: dict[bytes, bytes]) -> bytes:
    return prefix_id(fields[b"f"], f"{fields[b'e'].decode()}-{stream_id.decode()}")


def entry_frames(entries: t.Iterable[Entry], channels: t.Container[str]) -> list[bytes]:
    """The frames of those ``entries`` that are on one of ``channels``, for a replay."""
    return [
        entry_frame(stream_id, fields)
        for stream_id, fields in entries
        if fields[b"c"].decode() in channels
    ]


class Replay:
    """What a resume from one id replays: the ``missed`` frame (``None`` if none), the
    entries after the id, and the stream's last position they cover. Read once for the
    streams that resume from that id together, and encoded once per set of channels."""

    __slots__ = ("_frames", "entries", "missed", "upto")

    def __init__(self, missed: bytes | None, entries: list[Entry], upto: Position) -> None:
        self.missed = missed
        self.entries = entries
        self.upto = upto
        self._frames: dict[frozenset[str], list[bytes]] = {}

    def frames(self, channels: t.Iterable[str]) -> list[bytes]:
        """The notice, then the frames of the entries on ``channels``; not to be changed."""
        wanted = frozenset(channels)
        frames = self._frames.get(wanted)
        if frames is None:
            notice = [self.missed] if self.missed else []
            frames = self._frames[wanted] = notice + entry_frames(self.entries, wanted)
        return frames


def as_text(value: t.Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_id(stream_id: str) -> Position | None:
    """The position of a Redis stream id, or ``None`` if it is not one Redis could issue."""
    match = STREAM_ID.fullmatch(stream_id)
    if not match or int(match[1]) > MAX_PART or int(match[2]) > MAX_PART:
        return None
    return (int(match[1]), int(match[2]))


def range_after(position: Position) -> str:
    """An XRANGE start just after ``position`` (Redis refuses an exclusive start at the
    largest sequence of a millisecond, which ``position_before`` produces)."""
    milliseconds, sequence = position
    return f"{milliseconds + 1}-0" if sequence == MAX_PART else f"({milliseconds}-{sequence}"


def format_id(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


def predecessor(entry: Entry) -> Position:
    """The id generated just before ``entry``: its ``p``; for an entry written without one,
    the greatest id below it (which Redis issued only if it is in the same millisecond, and
    then just before it)."""
    previous = parse_id(as_text(entry[1].get(b"p", b"")))
    return (
        previous if previous is not None else position_before(parse_id(entry[0].decode()) or (0, 1))
    )


def position_before(position: Position) -> Position:
    """The greatest stream id below ``position``."""
    milliseconds, sequence = position
    return (milliseconds, sequence - 1) if sequence else (milliseconds - 1, MAX_PART)


def missed_frame(last_event_id: str, epoch: str, first: Position | None, resume: Position) -> bytes:
    """The ``event: missed`` frame for a resume from ``last_event_id`` that Redis cannot
    continue: ``first``, the oldest entry retained (``None``: none), and ``resume``, the
    position that a client resuming after the notice goes on from."""
    oldest = f"{epoch}-{format_id(first)}" if first else None
    return encode_event(
        Event(
            data={"last_event_id": last_event_id, "oldest_retained": oldest},
            event="missed",
            id=f"{epoch}-{format_id(resume)}",
        )
    )
