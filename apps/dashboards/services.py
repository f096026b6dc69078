"""Settings-page writes on team membership, with the rules a page may not bypass.

A team admin never adds anyone directly: every addition is an invitation the invited user
accepts (`apps.accounts.services.invitation_accept`), and whether the username belongs to
anyone changes neither the reply nor what the page shows afterwards. The operator's direct
path (`member_add`, which also resets passwords) stays off the web.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from apps.accounts.models import Invitation, Membership, Team
from apps.accounts.services import (
    invitation_create,
    invitation_revoke,
    member_set_role,
    password_check,
    user_create_unless_taken,
    username_check,
)
from apps.core.errors import BadRequest, ErrorCode, Forbidden

Role = Membership.Role


def _check_can_grant(*, actor: Membership, role: str) -> None:
    if not actor.can_manage:
        raise Forbidden("Only owners and admins can change members.")
    if role == Role.OWNER and actor.role != Role.OWNER:
        raise Forbidden("Only an owner can make someone an owner.", code=ErrorCode.OWNER_ONLY)


@transaction.atomic
def team_member_invite(*, actor: Membership, team: Team, username: str, password: str = "", role: str) -> Invitation:
    """Invite `username` to the team; with a password, first create that account if the name is free.

    Every check that can fail looks only at what the admin typed (role, username format,
    password rules, the team's own member list), never at whether the account exists, and the
    result is a pending invitation either way: nothing here tells the admin if the name was taken.
    """
    _check_can_grant(actor=actor, role=role)
    username = username.strip()
    username_check(username=username)
    if password:
        password_check(password=password, user=get_user_model()(username=username))
    if Membership.objects.filter(team=team, user__username=username).exists():
        # Only for names in the team's member table, which every member reads anyway.
        raise BadRequest(
            f"{username} is already a member; change their role in the table.", code=ErrorCode.ALREADY_MEMBER
        )
    if password:
        user_create_unless_taken(username=username, password=password)
    return invitation_create(team=team, username=username, role=role, created_by=actor.user)


def team_invitation_revoke(*, actor: Membership, invitation: Invitation) -> Invitation:
    """Withdraw a pending invitation of the actor's team; an owner invitation only by an owner."""
    if not actor.can_manage:
        raise Forbidden("Only owners and admins can change members.")
    if invitation.role == Role.OWNER and actor.role != Role.OWNER:
        raise Forbidden("Only an owner can withdraw an owner invitation.", code=ErrorCode.OWNER_ONLY)
    return invitation_revoke(invitation=invitation)


@transaction.atomic
def team_member_role_change(*, actor: Membership, membership: Membership, role: str) -> Membership:
    """Change a member's role: only owners grant or take away ownership, and a team keeps one owner."""
    _check_can_grant(actor=actor, role=role)
    if membership.role == Role.OWNER and actor.role != Role.OWNER:
        raise Forbidden("Only an owner can change an owner's role.", code=ErrorCode.OWNER_ONLY)
    if membership.role == Role.OWNER and role != Role.OWNER:
        owners = Membership.objects.select_for_update().filter(team_id=membership.team_id, role=Role.OWNER)
        if len(owners.values_list("id", flat=True)) <= 1:  # locked rows: no aggregate under FOR UPDATE
            raise BadRequest("A team needs at least one owner.", code=ErrorCode.LAST_OWNER)
    return member_set_role(membership=membership, role=role)
