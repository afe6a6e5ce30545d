"""Turn signals: which way a vehicle will go at the next branching, as its indicator shows it.

A driver (and a camera) cannot see another vehicle's route, but real vehicles announce their next
turn with an indicator. highway-env's vehicles have none, so the camera would hide the one cue
that tells a car about to turn from one about to cross, and the camera-perception expert would
have to wait for every way a car might go. Here every vehicle that follows a route signals, from
`SIGNAL_DISTANCE` before a branching (a node with more than one way out) until it has left the
branching lane: the camera draws the lit side (sim/camera.py) and the camera-perception expert
reads it only from vehicles in its frame (sim/expert.py), so the student sees what the expert uses.

Which side: each way out of a branching has a turning angle (the heading change over its first
lane). The way with the smallest turn is the reference; a way turning more than `MIN_TURN` left
of it signals left (-1), right of it right (+1), else nothing (0). Ways with the same signal cannot
be told apart, which is true of real indicators too.
"""
from __future__ import annotations

import weakref

import numpy as np

SIGNAL_DISTANCE = 30.0  # m before the branching at which the indicator comes on (about 3 s in town)
MIN_TURN = np.radians(20.0)
LEFT, NONE, RIGHT = -1, 0, 1

# per road network: {node: {next node: signal}} for branching nodes (static per episode)
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def wrap_angle(angle):
    """Angle(s) in [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _turn(lane) -> float:
    """Heading change over a lane, radians; negative turns left (highway-env's y axis points right)."""
    return wrap_angle(float(lane.heading_at(lane.length)) - float(lane.heading_at(0.0)))


def way_signals(net, node) -> dict:
    """{next node: signal} for the ways out of `node`, or {} where there is only one way (cached)."""
    table = _CACHE.get(net)
    if table is None:
        table = _CACHE[net] = {}
    if node not in table:
        outs = net.graph.get(node, {})
        signals = {}
        if len(outs) > 1:
            turns = {to: _turn(lanes[0]) for to, lanes in outs.items() if lanes}
            ref = min(turns.values(), key=abs)
            signals = {to: (LEFT if t - ref < -MIN_TURN else RIGHT if t - ref > MIN_TURN else NONE)
                       for to, t in turns.items()}
        table[node] = signals
    return table[node]


def next_road(route, road) -> tuple | None:
    """The road (from, to) a route takes after `road`, or None where the route does not say."""
    if not route:
        return None
    for a, b in zip(route, route[1:]):
        if tuple(a[:2]) == tuple(road):
            return tuple(b[:2])
    if route[0][0] == road[1]:
        return tuple(route[0][:2])
    return None


def branching_ahead(net, lane_index, position, distance: float = SIGNAL_DISTANCE):
    """The branching node at the end of the vehicle's lane when it is within `distance`, else None. Only the end of the current lane is looked at: on a lane that ends short
    of a branching the indicator stays off until the vehicle is on the lane that reaches it."""
    _from, to, _ = lane_index
    if way_signals(net, to):
        lane = net.get_lane(lane_index)
        if lane.length - lane.local_coordinates(position)[0] <= distance:
            return to
    return None


def turn_signal(net, vehicle, distance: float = SIGNAL_DISTANCE) -> int:
    """The indicator a vehicle shows: LEFT, RIGHT or NONE. Vehicles without a route (the ego, a
    vehicle that has run out of plan) show nothing."""
    lane_index = getattr(vehicle, "lane_index", None)
    route = getattr(vehicle, "route", None)
    if lane_index is None or not route:
        return NONE
    node = branching_ahead(net, lane_index, vehicle.position, distance)
    if node is not None:
        nxt = next_road(route, lane_index[:2])
        return way_signals(net, node).get(nxt[1], NONE) if nxt and nxt[0] == node else NONE
    # on the lane that leaves a branching: keep signalling until the turn is done
    return way_signals(net, lane_index[0]).get(lane_index[1], NONE)
