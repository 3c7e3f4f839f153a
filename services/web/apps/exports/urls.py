from rest_framework.routers import DefaultRouter

from apps.exports.views import ExportViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("exports", ExportViewSet, basename="export")

urlpatterns = router.urls
