"""The bank domain of the admin API: cardholder PINs, bound bank cards (快速圈存), automatic
top-up (自动圈存) and each tenant's bank top-up settings. Money never moves here: the switch
tops up at the kiosk (switch/_topup.py); this package keeps what it reads."""

from admin_api.bank._routes import ROUTES

__all__ = ["ROUTES"]
