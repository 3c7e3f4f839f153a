from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from apps.core.exceptions import LoginLocked, LoginUnavailable


class LockoutAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, saying why the per-username lockout (apps/accounts/lockout.py)
    refuses a login instead of failing with a server error."""

    def clean(self):
        try:
            return super().clean()
        except LoginLocked as exc:
            minutes = max(1, round((exc.wait or 60) / 60))
            raise ValidationError(
                "Too many login attempts for this username. Try again in about %(minutes)d "
                "minute(s).",
                code="login_locked",
                params={"minutes": minutes},
            ) from exc
        except LoginUnavailable as exc:
            raise ValidationError(
                "Login is temporarily unavailable. Try again shortly.", code="login_unavailable"
            ) from exc
