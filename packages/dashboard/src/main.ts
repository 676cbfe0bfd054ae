/// <reference lib="dom" />
/** The bundle's entry: the dashboard in the page's <div id="app">. */
import './style.css';
import { Dashboard } from './app.ts';

void new Dashboard(document.getElementById('app')!).start();
