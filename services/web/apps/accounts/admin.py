from django.contrib import admin

from apps.accounts.forms import LockoutAdminAuthenticationForm

# /admin/login/ says why the per-username lockout refuses (AdminSite.login_form).
admin.site.login_form = LockoutAdminAuthenticationForm
