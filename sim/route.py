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
        # past the destination any road is on the route (the roundabout's exit goes on beyond it)
        ends = [destination]
        for _ in range(AFTER_DESTINATION_ROADS):
            ends = [(a, b) for a in ends for b in network.graph.get(a, {})]
            roads += [r for r in ends if r not in roads]
            ends = [b for _, b in ends]
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
