"""The admin pages (``BASIC_GATE_ADMIN``): keys, packages and usage in a browser.

:func:`make_admin_blueprint` makes the blueprint that
:meth:`BasicGate.init_app <flask_basic_gate.BasicGate.init_app>` registers,
and protects with the gate itself, when the setting is on; nothing here is
imported otherwise. The pages are server-rendered Jinja templates
(``basic_gate/admin/*.html``, which the app's own templates of the same name
override) and one stylesheet: no script, nothing fetched from elsewhere.

Who may use them: keys of the packages in ``BASIC_GATE_ADMIN_PACKAGES``,
through the gate's Basic authentication; every other key gets 403. Every
POST carries the admin credential's form token and must come from a page of
the site (:mod:`.csrf`); every response carries :data:`SECURITY_HEADERS`.
Changes go through the :class:`~flask_basic_gate.store.KeyStore`, as the
CLI's do, and each is logged and sent as
:data:`~flask_basic_gate.signals.admin_changed`.
"""

from __future__ import annotations

from flask import Blueprint

from ..config import Settings
from . import views
from .views import BLUEPRINT_NAME, SECURITY_HEADERS

__all__ = ["BLUEPRINT_NAME", "SECURITY_HEADERS", "make_admin_blueprint"]


def make_admin_blueprint(settings: Settings) -> Blueprint:
    """A new admin blueprint for one app, at ``BASIC_GATE_ADMIN_URL_PREFIX``.

    It does not protect itself: ``init_app`` passes it to
    :meth:`BasicGate.protect <flask_basic_gate.BasicGate.protect>` with
    ``BASIC_GATE_ADMIN_PACKAGES`` before registering it. (Its views refuse
    any request the gate let through without an admin key all the same,
    as under ``BASIC_GATE_REPORT_ONLY``.)

    .. versionadded:: 0.1
    """
    blueprint = Blueprint(
        BLUEPRINT_NAME,
        __name__,
        url_prefix=settings.admin_url_prefix,
        # Searched after the app's own templates folder: an app template of
        # the same name (basic_gate/admin/keys.html) wins.
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    views.register(blueprint)
    return blueprint
