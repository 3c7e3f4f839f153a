from django.urls import path
from rest_framework.routers import DefaultRouter

from apps.posts.views import PostViewSet, bench_posts

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("posts", PostViewSet, basename="post")

urlpatterns = [
    path("bench/posts/", bench_posts, name="bench-posts"),
    *router.urls,
]
