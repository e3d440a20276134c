"""Pipeline runs over /api/v1/pipelines/runs/: each scheduled or on-demand run with its steps."""

from __future__ import annotations

from django.urls import path
from rest_framework import serializers

from api.models import Scope
from api.views import DetailApiView, ListApiView, cursor_by, text
from integrations.models import PipelineRun, PipelineStep


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = PipelineStep
        fields = [
            "name",
            "status",
            "started_at",
            "finished_at",
            "duration_ms",
            "rows_in",
            "rows_out",
            "error",
        ]
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):
    steps = StepSerializer(many=True, read_only=True)

    class Meta:
        model = PipelineRun
        fields = [
            "id",
            "job",
            "for_date",
            "status",
            "trigger",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
            "rows_in",
            "rows_out",
            "error",
            "steps",
        ]
        read_only_fields = fields


class RunFilters(serializers.Serializer):
    job = text(required=False, max_length=64)
    status = serializers.ChoiceField(choices=PipelineRun.Status.choices, required=False)


class RunList(ListApiView):
    """Pipeline runs, newest first, with their steps."""

    scope, permission = Scope.READ_KPIS, "integrations.view_pipelines"
    serializer_class = RunSerializer
    filters_class = RunFilters
    pagination_class = cursor_by("-id")

    def rows(self, filters):
        return PipelineRun.objects.filter(**filters).prefetch_related("steps")


class RunDetail(DetailApiView):
    scope, permission = Scope.READ_KPIS, "integrations.view_pipelines"
    serializer_class = RunSerializer
    queryset = PipelineRun.objects.prefetch_related("steps")


urlpatterns = [
    path("pipelines/runs/", RunList.as_view(), name="pipeline-runs"),
    path("pipelines/runs/<int:pk>/", RunDetail.as_view(), name="pipeline-run"),
]
