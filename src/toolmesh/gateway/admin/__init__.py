"""The admin API under ``/admin/`` (GW-4): servers, sessions, usage and cost, routing, audit, keys.

:mod:`~toolmesh.gateway.admin.api` routes; :mod:`~toolmesh.gateway.admin.request` parses;
:mod:`~toolmesh.gateway.admin.servers` and :mod:`~toolmesh.gateway.admin.data` answer;
:mod:`~toolmesh.gateway.admin.sync` shares run-time changes between workers.
"""

from toolmesh.gateway.admin.api import AdminApi
from toolmesh.gateway.admin.sync import Overlay

__all__ = ["AdminApi", "Overlay"]
