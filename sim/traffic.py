"""Traffic vehicle classes owned by this stack.

highway-env's intersection scenario sets IDM parameters on the traffic CLASS at every reset
(`vehicle_type.DISTANCE_WANTED = 7`, ...). With the stock IDMVehicle that silently changes every
other scenario built later in the same process (a highway run after an intersection run drives
differently). Giving the intersection its own subclass, with those values already set, keeps the
mutation inside it.
"""
from highway_env.vehicle.behavior import IDMVehicle


class IntersectionIDMVehicle(IDMVehicle):
    DISTANCE_WANTED = 7.0
    COMFORT_ACC_MAX = 6.0
    COMFORT_ACC_MIN = -3.0
