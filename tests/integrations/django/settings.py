"""Django settings for the integration tests (applied with ``settings.configure`` in conftest)."""

SECRET_KEY = "posthog-integration-tests"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "example.com", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "rest_framework.authtoken",
    "posthog_integrations.django",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "posthog_integrations.django.PosthogContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tests.integrations.django.middleware.ExplodingMiddleware",
]
ROOT_URLCONF = "tests.integrations.django.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "posthog_integrations.drf.exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}
LOGGING_CONFIG = None  # keep pytest's log capture in charge
