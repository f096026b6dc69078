"""Settings-page writes on team membership, with the rules a page may not bypass.

`apps.accounts.services.member_add` also resets the password of an existing user it is given
one for (the CLI's behaviour); from a web page that would let the admin of one team take over
a user of another, so here an existing user's password is never touched.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from apps.accounts.models import Membership, Team
from apps.accounts.services import member_add, member_set_role
from apps.core.errors import BadRequest, Forbidden

Role = Membership.Role


def _check_can_grant(*, actor: Membership, role: str) -> None:
    if not actor.can_manage:
        raise Forbidden("Only owners and admins can change members.")
    if role == Role.OWNER and actor.role != Role.OWNER:
        raise Forbidden("Only an owner can make someone an owner.", code="owner_only")


@transaction.atomic
def team_member_invite(*, actor: Membership, team: Team, username: str, password: str = "", role: str) -> Membership:
    """Add a user to the team (creating them with `password` when new); an existing member is refused."""
    _check_can_grant(actor=actor, role=role)
    username = username.strip()
    user = get_user_model().objects.filter(username=username).first()
    if user is not None and Membership.objects.filter(team=team, user=user).exists():
        raise BadRequest(f"{username} is already a member; change their role in the table.", code="already_member")
    if user is None and not password:
        raise BadRequest("A new user needs an initial password.", code="password_required")
    return member_add(team=team, username=username, password=password if user is None else None, role=role)


@transaction.atomic
def team_member_role_change(*, actor: Membership, membership: Membership, role: str) -> Membership:
    """Change a member's role: only owners grant or take away ownership, and a team keeps one owner."""
    _check_can_grant(actor=actor, role=role)
    if membership.role == Role.OWNER and actor.role != Role.OWNER:
        raise Forbidden("Only an owner can change an owner's role.", code="owner_only")
    if membership.role == Role.OWNER and role != Role.OWNER:
        owners = Membership.objects.select_for_update().filter(team_id=membership.team_id, role=Role.OWNER)
        if len(owners.values_list("id", flat=True)) <= 1:  # locked rows: no aggregate under FOR UPDATE
            raise BadRequest("A team needs at least one owner.", code="last_owner")
    return member_set_role(membership=membership, role=role)
