import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  InputDialog,
  MainAreaWidget
} from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { Source } from './api';
import { deploymentsWidget } from './deployments';
import { inventoryWidget } from './inventory';
import { monitorWidget } from './monitor';
import { HandoffModel, RefreshPolicy } from './model';
import { notifyOnEvents } from './notify';
import { HandoffPanel } from './panel';
import { compareWidget, reportWidget } from './views';

const PLUGIN_ID = 'jupyter-handoff:plugin';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24">
<path class="jp-icon3" fill="#616161" d="M3 11h11.2l-3.6-3.6L12 6l6 6-6 6-1.4-1.4 3.6-3.6H3v-2zm16-6h2v14h-2z"/></svg>`;
export const handoffIcon = new LabIcon({
  name: 'jupyter-handoff:icon',
  svgstr: ICON_SVG
});

namespace CommandIDs {
  export const open = 'handoff:open-panel';
  export const refresh = 'handoff:refresh';
  export const openReport = 'handoff:open-report';
  export const compare = 'handoff:compare';
  export const source = 'handoff:switch-source';
  export const inventory = 'handoff:open-inventory';
}

function openOrActivate<T extends Widget>(
  app: JupyterFrontEnd,
  make: () => MainAreaWidget<T>,
  id: string
): void {
  for (const w of app.shell.widgets('main')) {
    if (w.id === id) {
      app.shell.activateById(id);
      return;
    }
  }
  const widget = make();
  app.shell.add(widget, 'main');
  app.shell.activateById(widget.id);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Handoff side panel: models, verdicts, stages, reports and sign-offs.',
  autoStart: true,
  requires: [],
  optional: [ICommandPalette, ISettingRegistry, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null
  ) => {
    const openReport = (source: Source, model: string, n: number) =>
      openOrActivate(
        app,
        () => reportWidget(source, model, n),
        `handoff-report-${source}-${model}-${n}`
      );
    const model = new HandoffModel();
    const compare = (
      source: Source,
      a: [string, number],
      b: [string, number]
    ) =>
      openOrActivate(
        app,
        () => compareWidget(source, a, b, model.meta),
        `handoff-compare-${source}-${a.join(':')}-${b.join(':')}`
      );
    const openInventory = () =>
      openOrActivate(app, inventoryWidget, 'handoff-inventory');
    const openDeployments = (source: Source, name: string) =>
      openOrActivate(
        app,
        () => deploymentsWidget(source, name),
        `handoff-deployments-${source}-${name}`
      );
    const openMonitor = (source: Source, name: string) =>
      openOrActivate(
        app,
        () => monitorWidget(source, name),
        `handoff-monitor-${source}-${name}`
      );
    const panel = new HandoffPanel(model, {
      openReport,
      compare,
      openInventory,
      openDeployments,
      openMonitor
    });
    notifyOnEvents(model, openReport);
    panel.title.icon = handoffIcon;
    panel.title.label = '';
    app.shell.add(panel, 'left', { rank: 850 });
    if (restorer) {
      restorer.add(panel, 'jupyter-handoff-panel');
    }

    const { commands } = app;
    commands.addCommand(CommandIDs.open, {
      label: 'Handoff: Show Side Panel',
      execute: () => app.shell.activateById(panel.id)
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Handoff: Refresh Models',
      execute: () => model.refresh()
    });
    commands.addCommand(CommandIDs.compare, {
      label: 'Handoff: Compare Ticked Versions',
      execute: () => panel.compareSelected()
    });
    commands.addCommand(CommandIDs.inventory, {
      label: 'Handoff: Open Inventory',
      execute: openInventory
    });
    commands.addCommand(CommandIDs.source, {
      label: 'Handoff: Switch Between This Machine and Central',
      execute: () =>
        model.setSource(model.source === 'local' ? 'central' : 'local')
    });
    commands.addCommand(CommandIDs.openReport, {
      label: args =>
        args.model
          ? `Handoff: Open Report of ${args.model}:${args.version}`
          : 'Handoff: Open Report…',
      execute: async args => {
        let name = args.model as string | undefined;
        let n = args.version as number | undefined;
        if (!name) {
          const answer = await InputDialog.getText({
            title: 'Open a Handoff report',
            label: 'Version (NAME:N)',
            placeholder: 'churn:3'
          });
          const m = /^(.+):(\d+)$/.exec(answer.value?.trim() ?? '');
          if (!answer.button.accept || !m) {
            return;
          }
          name = m[1];
          n = Number(m[2]);
        }
        openReport((args.source as Source) ?? model.source, name, Number(n));
      }
    });
    if (palette) {
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category: 'Handoff' });
      }
    }

    const apply = (settings: ISettingRegistry.ISettings | null) => {
      const get = <T>(key: string, fallback: T): T =>
        settings ? ((settings.get(key).composite as T) ?? fallback) : fallback;
      void model.configure({
        refresh: get<RefreshPolicy>('refresh', 'live'),
        pollInterval: get('pollInterval', 10),
        notifications: get('notifications', true),
        source: get<'auto' | Source>('source', 'auto')
      });
    };
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          apply(settings);
          settings.changed.connect(() => apply(settings));
        })
        .catch(reason => {
          console.error('Handoff: could not load settings', reason);
          apply(null);
        });
    } else {
      apply(null);
    }
  }
};

export default plugin;
