from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector first: long-term memory keeps its embeddings in vector columns."""

    initial = True
    dependencies = []
    operations = [VectorExtension()]
