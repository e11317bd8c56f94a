"""The web dashboard (GW-6): static files at ``/ui/`` and the admin data endpoints behind its pages.

``/ui/`` serves plain HTML, CSS and ES modules shipped as package data (no build step, no CDN)
under a strict Content-Security-Policy; the pages read the admin API with an admin key held in
``sessionStorage``. :class:`Dashboard` is mounted by :class:`toolmesh.gateway.app.GatewayApp`.
"""

from toolmesh.gateway.ui.routes import Dashboard
from toolmesh.gateway.ui.static import CSP, StaticFiles

__all__ = ["CSP", "Dashboard", "StaticFiles"]
