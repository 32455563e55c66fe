"""The tenancy rule: an operator acts on its company's lots; the city reads all, changes none."""

from __future__ import annotations

import pytest

from parking.auth.model import Principal, Role
from parking.lots import logic
from parking.lots.model import Access


def who(role: Role, company: str | None = None) -> Principal:
    return Principal(subject="s", role=role, token_id="t", company=company)


OPERATOR_A = who(Role.OPERATOR, "gz-urban")


@pytest.mark.parametrize("access", list(Access))
def test_an_operator_acts_on_its_own_companys_lots(access: Access) -> None:
    assert logic.may_act_on_lot(OPERATOR_A, "gz-urban", access)


@pytest.mark.parametrize("access", list(Access))
@pytest.mark.parametrize("owner", ["gz-south", None])
def test_an_operator_acts_on_no_other_lot(access: Access, owner: str | None) -> None:
    assert not logic.may_act_on_lot(OPERATOR_A, owner, access)


@pytest.mark.parametrize("owner", ["gz-urban", "gz-south", None])
def test_the_city_reads_every_lot_and_changes_none(owner: str | None) -> None:
    city = who(Role.CITY)
    assert logic.may_act_on_lot(city, owner, Access.READ)
    assert not logic.may_act_on_lot(city, owner, Access.CHANGE)


@pytest.mark.parametrize("role", [Role.DRIVER, Role.DEVICE])
def test_other_roles_act_on_no_lot(role: Role) -> None:
    assert not logic.may_act_on_lot(who(role), "gz-urban", Access.READ)
    assert logic.lot_filter(who(role)) == ""


def test_lists_are_filtered_to_the_operators_company_and_not_for_the_city() -> None:
    assert logic.lot_filter(OPERATOR_A) == "gz-urban"
    assert logic.lot_filter(who(Role.CITY)) is None


def test_the_citys_tariffs_are_read_by_every_company_and_versioned_by_none() -> None:
    assert logic.may_act_on_tariff(OPERATOR_A, None, Access.READ)
    assert not logic.may_act_on_tariff(OPERATOR_A, None, Access.CHANGE)
    assert logic.may_act_on_tariff(OPERATOR_A, "gz-urban", Access.CHANGE)
    assert not logic.may_act_on_tariff(OPERATOR_A, "gz-south", Access.READ)
    assert not logic.may_act_on_tariff(who(Role.DRIVER), None, Access.READ)
