// The dashboard type that collector/dashboards/*.json must satisfy, built from @grafana/schema's own types.
//
// dashboards.gen.ts (written by `generate.py --typescript`, not committed) holds each dashboard as an object
// literal typed `CheckedDashboard`, so tsc checks literal values (panel types, enum strings, numbers) and rejects unknown properties (excess property
// checks) at every level. Only `timeseries` and `stat` panels are allowed: `graph` is deprecated.
import type {
  DataQuery,
  DataSourceRef,
  Dashboard,
  FieldConfig,
  FieldConfigSource,
  VariableModel,
} from "@grafana/schema";
import type {
  FieldConfig as TimeSeriesFieldConfig,
  Options as TimeSeriesOptions,
} from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";
import type { Options as StatOptions } from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";

// Grafana's schema uses TypeScript string enums (e.g. BigValueColorMode.Value = "value"); a JSON document holds
// the plain string, so compare against the enum's string values instead.
type Literal<T> = T extends string
  ? `${T}`
  : T extends ReadonlyArray<infer U>
    ? Array<Literal<U>>
    : T extends object
      ? { [K in keyof T]: Literal<T[K]> }
      : T;

// @grafana/schema 13.2 publishes no Prometheus query type, so this is the subset of the Prometheus data source's
// query model (public/app/plugins/datasource/prometheus) the dashboards use.
interface PrometheusQuery extends DataQuery {
  expr: string;
  legendFormat?: string;
  editorMode?: "code" | "builder";
  range?: boolean;
  instant?: boolean;
  format?: "time_series" | "table" | "heatmap";
  interval?: string;
  datasource: DataSourceRef;
}

type PanelBase = Omit<Literal<import("@grafana/schema").Panel>, "type" | "options" | "fieldConfig" | "targets" | "datasource"> & {
  datasource: DataSourceRef;
  targets: PrometheusQuery[];
};

type Defaults<Custom> = Literal<Omit<FieldConfig, "custom">> & ([Custom] extends [never] ? unknown : { custom: Literal<Custom> });

interface FieldConfigOf<Custom> {
  defaults: Defaults<Custom>;
  overrides: Literal<FieldConfigSource["overrides"]>;
}

export type TimeSeriesPanel = PanelBase & {
  type: "timeseries";
  options: Literal<TimeSeriesOptions>;
  fieldConfig: FieldConfigOf<TimeSeriesFieldConfig>;
};

export type StatPanel = PanelBase & {
  type: "stat";
  options: Literal<StatOptions>;
  fieldConfig: FieldConfigOf<never>;
};

export type CheckedDashboard = Omit<Literal<Dashboard>, "panels" | "templating" | "uid" | "title"> & {
  uid: string;
  title: string;
  panels: Array<TimeSeriesPanel | StatPanel>;
  templating: { list: Array<Literal<VariableModel>> };
};
