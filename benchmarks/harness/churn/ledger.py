"""What the clients received, against what was published: the counters the run reports and
the examples behind them."""

from __future__ import annotations

import collections
import typing as t

from .publisher import CHANNELS

if t.TYPE_CHECKING:
    from .crowd import Client


COUNTERS = (
    "expected",
    "received",
    "lost",
    "duplicated",
    "duplicated_after_missed",
    "out_of_order",
    "republished",
    "missed_notices",
    "announced_gaps",
    "unacknowledged",
    "wrong_channel",
    "connects",
    "drops",
    "refused",
    "closed_by_server",
    "never_connected",
)


def analyse(
    clients: list[Client], sent_at: dict[int, float], attempts: dict[int, int], last_of_run: int
) -> dict[str, t.Any]:
    totals: collections.Counter[str] = collections.Counter({name: 0 for name in COUNTERS})
    examples: list[str] = []
    noted: collections.Counter[int] = collections.Counter()  # examples per client

    def note(client: Client, text: str) -> None:
        examples.append(text)
        noted[client.index] += 1

    republished_events: set[int] = set()
    by_channel: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
    for sequence, sent in sent_at.items():
        if sequence <= last_of_run:
            by_channel[sequence % CHANNELS].append((sent, sequence))
    for client in clients:
        totals["connects"] += client.connects
        totals["drops"] += client.drops
        totals["refused"] += client.refused
        totals["closed_by_server"] += client.closed_by_server
        totals["missed_notices"] += len(client.missed)
        if client.since is None:
            totals["never_connected"] += 1
            examples.append(f"client {client.index} never had a stream open")
            continue
        expected = {
            sequence
            for channel in client.channels
            for sent, sequence in by_channel[channel]
            if sent > client.since
        }
        seen_ids: set[int] = set()
        first_position: dict[int, int] = {}  # id number -> position of its first arrival
        first_seen: dict[int, int] = {}  # sequence -> position of its first arrival
        highest = -1
        order: list[int] = []  # sequence numbers in order of first arrival, for the gaps
        positions: list[int] = []
        for position, (sequence, number) in enumerate(
            zip(client.sequences, client.ids, strict=True)
        ):
            if number in seen_ids:
                totals["duplicated"] += 1
                if any(first_position[number] < notice <= position for notice in client.missed):
                    # Resent in the replay that follows a missed notice, the client's resume
                    # id unknown to the broker it reached.
                    totals["duplicated_after_missed"] += 1
                if len(examples) < 20 and noted[client.index] < 3:
                    note(client, f"client {client.index}: event {sequence} (the same id) twice")
                continue
            seen_ids.add(number)
            first_position[number] = position
            if sequence in first_seen:
                if attempts.get(sequence, 0) > 1:
                    totals["republished"] += 1
                    republished_events.add(sequence)
                else:
                    totals["duplicated"] += 1
                    if len(examples) < 20 and noted[client.index] < 3:
                        note(
                            client,
                            f"client {client.index}: event {sequence} twice, under two ids, published once",
                        )
                continue
            first_seen[sequence] = position
            order.append(sequence)
            positions.append(position)
            if sequence < highest:
                totals["out_of_order"] += 1
                if len(examples) < 20 and noted[client.index] < 3:
                    note(client, f"client {client.index}: event {sequence} after {highest}")
            highest = max(highest, sequence)
            if sequence % CHANNELS not in client.channels:
                totals["wrong_channel"] += 1
                if len(examples) < 20 and noted[client.index] < 3:
                    note(
                        client,
                        f"client {client.index} (channels {client.channels}): event {sequence} of another channel",
                    )
            if sequence <= last_of_run and sequence not in sent_at:
                totals["unacknowledged"] += 1
        missing = expected - first_seen.keys()
        if missing and client.missed:
            announced = set()
            for notice in client.missed:
                # The gap a notice announces: after the last event received before it, up to
                # the first received after it.
                before = max(
                    (s for s, p in zip(order, positions, strict=True) if p < notice), default=-1
                )
                after = min(
                    (s for s, p in zip(order, positions, strict=True) if p >= notice),
                    default=float("inf"),
                )
                announced |= {s for s in missing if before < s < after}
            totals["announced_gaps"] += len(announced)
            missing -= announced
        totals["expected"] += len(expected)
        totals["received"] += len(expected & first_seen.keys())
        totals["lost"] += len(missing)
        if missing and len(examples) < 20 and noted[client.index] < 3:
            examples.append(
                f"client {client.index} (channels {client.channels}): lost {sorted(missing)[:10]}{' ...' if len(missing) > 10 else ''}"
            )
    return {"totals": dict(totals), "examples": examples, "republished": sorted(republished_events)}
