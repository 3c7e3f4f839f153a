"""Print this container's readiness (``GET /readyz`` on its own server, 127.0.0.1:8000) and
exit 1 unless it is ready. nginx does not serve ``/readyz`` to the public, so monitors on the
host ask through this command (``make readyz``); the answer is the endpoint's JSON.
"""

import urllib.error
import urllib.request

from django.core.management.base import BaseCommand, CommandError

URL = "http://127.0.0.1:8000/readyz"
TIMEOUT_SECONDS = 10


class Command(BaseCommand):
    help = "Print GET /readyz of the server in this container; exit 1 unless it answers 200."

    def handle(self, *args, **options):
        try:
            with urllib.request.urlopen(URL, timeout=TIMEOUT_SECONDS) as response:
                self.stdout.write(response.read().decode())
        except urllib.error.HTTPError as error:
            self.stdout.write(error.read().decode())
            raise CommandError(f"not ready: {URL} answered {error.code}") from None
        except OSError as error:
            raise CommandError(f"no answer from {URL}: {error}") from None
