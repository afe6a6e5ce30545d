"""The route a scenario asks for, and whether the ego is still on it.

Intersection and roundabout name a destination (the ego turns left; it leaves the ring at the north
exit). highway-env ends an intersection episode at any exit, and the driving score's route
completion counts metres along whatever road the ego is on, so without this a car that went straight
on scored as a car that turned. The route is the network's shortest path from the ego's first lane
to the destination; the ego is off it once its centre is more than OFF_ROUTE_M (L1, lateral plus
beyond a lane's ends) from every lane of the route's roads that it drives along (not against). A
distance, not the ego's lane index: where roads overlap or leave gaps (a junction's middle, the
roundabout's entries and exits, which end metres from the ring) the nearest lane flickers between
roads the ego is not choosing.

`leader` follows the same roads ahead: the vehicle ahead of the ego beyond its road segment, for the
time-to-collision and headway metrics.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

# The expert's largest distance from its own route on 50 seeds: 0.3 m on intersection, 3.4 m on
# roundabout (its entry ends metres from the ring); a lane is 4 m wide.
OFF_ROUTE_M = 8.0
AFTER_DESTINATION_ROADS = 2


class Route:
    def __init__(self, network, lane_index, destination: str):
        nodes = network.shortest_path(lane_index[1], destination) if lane_index[1] != destination else []
        if lane_index[1] != destination and not nodes:
            raise ValueError(f"no road leads from lane {lane_index} to the destination {destination!r}")
        roads = [tuple(lane_index[:2]), *itertools.pairwise(nodes)]
        # past the destination the roads that go on ahead are on the route (the roundabout's exit goes
        # on beyond it), not those that turn back: from the intersection's exit o1 the graph leads into
        # arm 1's entry lane and through the junction again, where a wrong turn then counted as on route
        ends = [roads[-1]]
        for _ in range(AFTER_DESTINATION_ROADS):
            ends = [(b, c) for a, b in ends for c in network.graph.get(b, {})
                    if _goes_on(network.graph[a][b][0], network.graph[b][c][0])]
            roads += [r for r in ends if r not in roads]
        self.roads = roads
        self.lanes = [lane for a, b in roads for lane in network.graph[a][b]]

    def distance(self, position, heading: float | None = None) -> float:
        """Metres (L1) from `position` to the nearest lane of the route; with `heading`, only lanes the
        ego drives along, not against (the intersection's exit back out of the entry arm runs 4 m
        beside the entry lane)."""
        p = np.asarray(position, dtype=np.float64)
        best = math.inf
        for lane in self.lanes:
            s, lat = lane.local_coordinates(p)
            if heading is not None and abs(lane.local_angle(heading, s)) >= math.pi / 2:
                continue
            best = min(best, abs(lat) + max(s - lane.length, 0.0) + max(-s, 0.0))  # highway-env's Lane.distance
        return float(best)

    def on(self, position, heading: float | None = None) -> bool:
        return self.distance(position, heading) <= OFF_ROUTE_M

    def next_road(self, road: tuple) -> tuple | None:
        """The route's road after `road`, where `road` is on the route."""
        if road not in self.roads:
            return None
        return next((r for r in self.roads if r[0] == road[1]), None)


LEADER_LOOKAHEAD_M = 120.0  # beyond this the leader's time gap is above metrics.TTC_CAP_S at any speed here
LEADER_SEGMENTS = 8  # road segments searched at most (the shortest are ~10 m)


def leader(road, ego, route: Route | None = None):
    """The vehicle ahead of `ego` in its lane, or else in the lanes that continue it (the route's next
    road where there is a route, else the straightest road that goes on), up to LEADER_LOOKAHEAD_M:
    highway-env's neighbour search covers one road segment, and on racetrack, roundabout, merge and
    intersection segments are 10-60 m long. None where there is none. Reads the road, changes nothing."""
    index = ego.lane_index
    network = road.network
    for _ in range(LEADER_SEGMENTS):
        if not index:
            return None
        front, _ = road.neighbour_vehicles(ego, index)
        if front is not None:
            return front
        lane = network.get_lane(index)
        if lane.length - lane.local_coordinates(ego.position)[0] > LEADER_LOOKAHEAD_M:
            return None
        index = _next_lane(network, index, lane, route)
    return None


def _next_lane(network, index, lane, route: Route | None):
    """The lane that continues `lane` (index `index`): on the route's next road, else on the
    straightest road that goes on; the same lane number where that road has it (as highway-env's)."""
    _from, _to, _id = index
    ahead = route.next_road((_from, _to)) if route is not None else None
    if ahead is None:
        turns = {(_to, c): abs(_turn(lane, lanes[0])) for c, lanes in network.graph.get(_to, {}).items()}
        ahead = min((r for r, t in turns.items() if t < math.pi / 2), key=turns.get, default=None)
        if ahead is None:
            return None
    lanes = network.graph[ahead[0]][ahead[1]]
    return (*ahead, _id if _id < len(lanes) else 0)


def _turn(lane, following) -> float:
    """Radians from where `lane` ends to where `following` starts, in [-pi, pi)."""
    turn = following.heading_at(0.0) - lane.heading_at(lane.length)
    return (turn + math.pi) % (2 * math.pi) - math.pi


def _goes_on(lane, following) -> bool:
    """Whether `following` starts within 90 degrees of where `lane` ends (not a U-turn)."""
    return abs(_turn(lane, following)) < math.pi / 2
